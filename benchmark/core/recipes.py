"""The recipe ledger (``benchmark/recipe_ledger.yaml``): what the published code trains with, per
dataset x method x stage, each value with its source, and the deviations our paper presets declare.

A preset opts in with ``recipe_ledger``: ``strict`` (the paper presets) makes ``config.validate``
refuse any value that is neither the published one nor a declared deviation, and prints the
declared deviations when the preset starts; ``marks`` (the smoke overlay, which shrinks every
recipe) only marks the paper tables' reference cells whose recipe deviates; ``off`` (default)
ignores the ledger. ``python -m benchmark.core.recipes --write docs/recipes.md`` writes the ledger as
a page; ``--check`` fails when the committed page differs. No torch here: the Snakefile imports it.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

from benchmark.core import registry, strict_yaml
from benchmark.core.choices import S2AP_NA
from benchmark.core.io import atomic_open
from benchmark.core.paths import PACKAGE_DIR

LEDGER_PATH = PACKAGE_DIR / "recipe_ledger.yaml"

# Our augmentation per dataset when data.augment is on, in the ledger's words; the transforms are
# benchmark/core/datasets.py _transforms (tests/test_recipes.py pins the two together).
AUGMENTATION = {"cifar10": "crop4_flip", "svhn": "crop4", "imagenet": "rrc224_flip",
                "fashion-mnist": "pad2_crop2"}
# Field -> where a train stage config holds it (benchmark.core.config.stage_config's ``train``);
# milestones, attack defaults, augmentation and split are derived (``preset_value``).
_TRAIN_FIELDS = {"epochs": "epochs", "lr": "lr", "schedule": "schedule",
                 "weight_decay": "weight_decay", "momentum": "momentum", "batch_size": "batch_size",
                 "loss": "loss", "trades_beta": "trades_beta", "adv_eval_mode": "adv_eval_mode"}
# Training options added after results existed: absent from a stage config means this default
# (benchmark.training.loop.TrainConfig), so older presets keep their hashes.
TRAIN_OPTION_DEFAULTS = {"keep": "last", "bn_refresh": False, "free_replays": 1}
FIELDS = (*_TRAIN_FIELDS, "milestones", "free_replays", "attack_eps", "attack_steps",
          "attack_step_size", "keep", "bn_refresh", "augmentation", "split")


class LedgerError(ValueError):
    """A preset that contradicts the recipe ledger, or a malformed ledger."""


@dataclass(frozen=True)
class Deviation:
    dataset: str
    method: str
    stage: str  # pretrain | prune | finetune | options
    field: str
    published: Any
    ours: Any
    reason: str

    def line(self) -> str:
        return (f"{self.dataset}/{self.method}/{self.stage}: {self.field} {_show(self.ours)} "
                f"(published {_show(self.published)}): {self.reason}")


def _show(v: Any) -> str:
    return "null" if v is None else str(v)


def _number(v: Any) -> Any:
    if isinstance(v, str) and "/" in v:
        try:
            return float(Fraction(v))
        except ValueError:
            return v
    return v


@lru_cache(maxsize=1)
def load_ledger(path: str | None = None) -> dict[str, Any]:
    ledger = strict_yaml.load_file(path or LEDGER_PATH)
    sources = ledger["sources"]
    for entry in ledger["recipes"]:
        for field, spec in entry["fields"].items():
            where = f"{entry['dataset']}/{entry['method']}/{entry['stage']}.{field}"
            if field not in FIELDS:
                raise LedgerError(f"recipe ledger {where}: unknown field; valid: {', '.join(FIELDS)}")
            if spec.get("value") is None and not spec.get("not_public") and "source" not in spec:
                raise LedgerError(f"recipe ledger {where}: a null value needs not_public (why)")
            if spec.get("source") is not None and spec["source"] not in sources:
                raise LedgerError(f"recipe ledger {where}: unknown source {spec['source']!r}")
            if "ours" in spec and spec.get("value") is not None and not spec.get("reason"):
                raise LedgerError(f"recipe ledger {where}: a deviation needs its reason")
    return ledger


def entry(dataset: str, method: str, stage: str) -> dict[str, Any] | None:
    """The ledger's entry for a dataset x method x stage (a method's alias followed), or None."""
    ledger = load_ledger()
    alias = (ledger.get("aliases") or {}).get(method)
    name = alias["as"] if alias else method
    for e in ledger["recipes"]:
        if (e["dataset"], e["method"], e["stage"]) == (dataset, name, stage):
            return e
    return None


def expected(spec: Mapping[str, Any]) -> Any:
    """What a preset must hold for a field: the declared deviation, else the published value
    (None: nothing to check, the record is silent and we declared no choice)."""
    return _number(spec["ours"] if "ours" in spec else spec.get("value"))


def is_deviation(spec: Mapping[str, Any]) -> bool:
    return "ours" in spec and spec.get("value") is not None and _number(spec["ours"]) != _number(spec["value"])


def _same(a: Any, b: Any) -> bool:
    a, b = _number(a), _number(b)
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(b)))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def preset_value(field: str, stage_cfg: Mapping[str, Any], dataset: str) -> Any:
    """A field's value in one stage config (benchmark.core.config.stage_config), derived where the
    preset states it otherwise (null attack fields take the dataset's defaults)."""
    train = stage_cfg["train"]
    info = registry.DATASETS.get(dataset)
    if field in _TRAIN_FIELDS:
        return train.get(_TRAIN_FIELDS[field])
    if field in TRAIN_OPTION_DEFAULTS:
        return train.get(field, TRAIN_OPTION_DEFAULTS[field])
    if field == "milestones":
        # benchmark.training.loop.StepDecay: x0.1 at 50 % and 75 % of the epochs
        e = int(train["epochs"])
        return [int(0.5 * e), int(0.75 * e)] if train["schedule"] == "step" else None
    attack = train.get("attack") or {}
    if field == "attack_eps":
        return info.eps if attack.get("eps") is None else attack["eps"]
    if field == "attack_steps":
        return info.steps if attack.get("steps") is None else attack["steps"]
    if field == "attack_step_size":
        return info.step_size if attack.get("step_size") is None else attack["step_size"]
    data = stage_cfg["data"]
    if field == "augmentation":
        return AUGMENTATION.get(dataset) if data.get("augment", True) else "none"
    if field == "split":
        return f"holdout_{int(data['val_size'])}" if int(data["val_size"]) else "full_train_test_selects"
    raise LedgerError(f"unknown ledger field {field!r}")


def _skip(field: str, spec_value: Any, stage_cfg: Mapping[str, Any]) -> bool:
    """Fields that do not apply to the preset's loss (trades_beta without TRADES, replays and
    attack steps without free AT and with it)."""
    loss = stage_cfg["train"].get("loss")
    if field == "trades_beta":
        return loss != "trades"
    if field in ("attack_steps", "attack_step_size"):
        return loss == "free"
    return False


def _cells(cfg: Mapping[str, Any], traits_of: Mapping[str, Mapping[str, bool]]
           ) -> Iterable[tuple[str, str, str]]:
    """(dataset, method, stage) of every training stage the preset runs."""
    grid = cfg["grid"]
    for dataset in grid["datasets"]:
        for method in grid["methods"]:
            traits = traits_of[method]
            if traits["needs_pretrain"]:
                yield dataset, method, "pretrain"
            if traits["learns_scores"]:
                yield dataset, method, "prune"
            if traits["needs_finetune"]:
                yield dataset, method, "finetune"


def check_preset(cfg: Mapping[str, Any], traits_of: Mapping[str, Mapping[str, bool]],
                 stage_config: Callable[..., dict]) -> tuple[list[str], list[Deviation]]:
    """(problems, declared deviations) of a validated preset against the ledger: a problem is a
    value that is neither the published one nor the declared deviation. ``traits_of``: method ->
    its traits (benchmark.core.config.method_traits) for every grid method; ``stage_config``:
    benchmark.core.config.stage_config (passed in: the config validates presets with this module)."""

    problems: list[str] = []
    deviations: list[Deviation] = []
    arch = cfg["grid"]["archs"][0]  # no recipe depends on the architecture
    for dataset, method, stage in _cells(cfg, traits_of):
        e = entry(dataset, method, stage)
        if e is None:
            problems.append(f"recipe_ledger: no ledger entry for {dataset}/{method}/{stage}; add one "
                            "to benchmark/recipe_ledger.yaml (with its sources) or set "
                            "recipe_ledger: off")
            continue
        traits = traits_of[method]
        stage_cfg = stage_config(cfg, stage, dataset=dataset, arch=arch, method=method,
                                 s2ap="off" if traits["learns_scores"] else S2AP_NA, traits=traits)
        for field, spec in e["fields"].items():
            if _skip(field, spec, stage_cfg):
                continue
            want = expected(spec)
            have = preset_value(field, stage_cfg, dataset)
            if want is None and "ours" not in spec:
                continue
            where = f"{dataset}/{method}/{stage}.{field}"
            if not _same(have, want):
                pub = spec.get("value")
                what = (f"the declared deviation is {_show(spec['ours'])} (published {_show(pub)})"
                        if "ours" in spec else f"the published value is {_show(pub)} "
                        f"({load_ledger()['sources'].get(spec.get('source'), spec.get('source'))})")
                problems.append(f"recipe_ledger: {where} is {_show(have)}, but {what}; change the "
                                "preset, or declare the deviation and its reason in "
                                "benchmark/recipe_ledger.yaml")
            elif is_deviation(spec):
                deviations.append(Deviation(dataset, method, stage, field, spec["value"],
                                            spec["ours"], spec.get("reason", "")))
    problems_o, devs_o = _check_options(cfg)
    return problems + problems_o, deviations + devs_o


def _check_options(cfg: Mapping[str, Any]) -> tuple[list[str], list[Deviation]]:
    """Method options the ledger records: a value the preset sets must be the published one or
    the declared deviation; unset options are the method's defaults (tests/test_recipes.py pins
    those against the ledger, which needs the method's code)."""
    problems, deviations = [], []
    grid = cfg["grid"]
    for method, fields in (load_ledger().get("options") or {}).items():
        if method not in grid["methods"]:
            continue
        options = ((cfg.get("methods") or {}).get(method) or {}).get("options") or {}
        structured = bool(options.get("structured"))
        for field, spec in fields.items():
            specs = ({d: spec[d] for d in grid["datasets"] if d in spec}
                     if "value" not in spec else {d: spec for d in grid["datasets"]})
            if (spec.get("structured_only") and not structured) or \
                    (spec.get("unstructured_only") and structured):
                continue
            for dataset, s in specs.items():
                if field in options and not _same(options[field], expected(s)):
                    problems.append(f"recipe_ledger: methods.{method}.options.{field} is "
                                    f"{_show(options[field])}, but the ledger says "
                                    f"{_show(expected(s))} for {dataset}")
                elif is_deviation(s):
                    deviations.append(Deviation(dataset, method, "options", field, s["value"],
                                                s["ours"], s.get("reason", "")))
    return problems, deviations


def mode(cfg: Mapping[str, Any]) -> str:
    return cfg.get("recipe_ledger") or "off"


def deviations_by_method(cfg: Mapping[str, Any], traits_of: Mapping[str, Mapping[str, bool]],
                         stage_config: Callable[..., dict]) -> dict[str, list[str]]:
    """method -> its declared deviations as lines, for the paper tables' "recipe differs" marks;
    empty when the preset does not follow the ledger."""
    if mode(cfg) == "off":
        return {}
    _, devs = check_preset(cfg, traits_of, stage_config)
    out: dict[str, list[str]] = {}
    for d in devs:
        out.setdefault(d.method, [])
        if d.line() not in out[d.method]:
            out[d.method].append(d.line())
    return out


_CACHE: dict[str, dict[str, list[str]]] = {}


def cached_deviations(cfg: Mapping[str, Any], stage_config: Callable[..., dict],
                      traits_of: Callable[[Mapping[str, Any]], Mapping[str, Mapping[str, bool]]]
                      ) -> dict[str, list[str]]:
    """``deviations_by_method`` for every grid method (``traits_of(cfg)``), computed once per
    preset content (the workflow asks once per evaluation job while it parses)."""
    key = json.dumps(cfg, sort_keys=True, default=str)
    if key not in _CACHE:
        _CACHE[key] = deviations_by_method(cfg, traits_of(cfg), stage_config)
    return _CACHE[key]


def startup_lines(cfg: Mapping[str, Any], traits_of: Mapping[str, Mapping[str, bool]],
                  stage_config: Callable[..., dict]) -> list[str]:
    """What a run prints when it starts: the preset's declared deviations from the published
    recipes (none when the preset does not follow the ledger)."""
    if mode(cfg) == "off":
        return []
    _, devs = check_preset(cfg, traits_of, stage_config)
    if not devs:
        return [f"{cfg['name']}: follows the published recipes with no declared deviation"]
    lines = sorted({d.line() for d in devs})
    return [f"{cfg['name']}: {len(lines)} declared deviation(s) from the published recipes "
            "(benchmark/recipe_ledger.yaml, docs/recipes.md):", *(f"  - {x}" for x in lines)]


# ---------------------------------------------------------------- docs/recipes.md
def _cell(spec: Mapping[str, Any], sources: Mapping[str, str]) -> str:
    pub = spec.get("value")
    text = _show(pub) if pub is not None else ("not public" if spec.get("not_public") else "none")
    if "ours" in spec and (pub is None or not _same(spec["ours"], pub)):
        text += f" → ours {_show(spec['ours'])}" + (" (deviation)" if pub is not None else "")
    return text.replace("|", "\\|")


def render() -> str:
    ledger = load_ledger()
    sources = ledger["sources"]
    out = ["# Recipes: the published values, their sources, and our declared deviations", "",
           "Generated from `benchmark/recipe_ledger.yaml` by `python -m benchmark.core.recipes --write "
           "docs/recipes.md`; do not edit by hand (`tests/test_recipes.py` checks it is current).",
           "A paper preset (`recipe_ledger: strict`) must hold every value below: the published one, "
           "or the deviation the ledger declares (\"→ ours\") with its reason. A run of a paper "
           "preset prints its deviations when it starts, and every paper table marks the reference "
           "cells of a method whose recipe deviates (\"recipe differs\").", ""]
    for dataset in dict.fromkeys(e["dataset"] for e in ledger["recipes"]):
        out += [f"## {dataset}", ""]
        entries = [e for e in ledger["recipes"] if e["dataset"] == dataset]
        cols = [f"{e['method']} {e['stage']}" for e in entries]
        out.append("| field | " + " | ".join(cols) + " |")
        out.append("|" + "|".join(" --- " for _ in range(len(cols) + 1)) + "|")
        for field in FIELDS:
            if not any(field in e["fields"] for e in entries):
                continue
            cells = [_cell(e["fields"][field], sources) if field in e["fields"] else "—"
                     for e in entries]
            out.append(f"| {field} | " + " | ".join(cells) + " |")
        out.append("")
        out += ["Sources:", ""]
        for e in entries:
            srcs = sorted({s["source"] for s in e["fields"].values() if s.get("source")})
            out.append(f"- {e['method']} {e['stage']}: " + "; ".join(f"`{s}`" for s in srcs))
        out.append("")
    out += ["## Declared deviations and choices without a public source", ""]
    for e in ledger["recipes"]:
        for field, spec in e["fields"].items():
            if is_deviation(spec):
                out.append(f"- {e['dataset']}/{e['method']}/{e['stage']} `{field}`: ours "
                           f"{_show(spec['ours'])}, published {_show(spec['value'])} "
                           f"(`{spec.get('source')}`): {spec['reason']}")
            elif spec.get("not_public"):
                out.append(f"- {e['dataset']}/{e['method']}/{e['stage']} `{field}`: "
                           f"{spec['not_public']}")
    out.append("")
    out += ["## Method options", ""]
    for method, fields in (ledger.get("options") or {}).items():
        for field, spec in fields.items():
            specs = spec.items() if "value" not in spec else [("all datasets", spec)]
            for where, s in specs:
                if not isinstance(s, Mapping):
                    continue
                extra = " (structured only)" if spec.get("structured_only") else ""
                line = f"- {method} `{field}`{extra}, {where}: published {_show(s.get('value'))} (`{s.get('source')}`)"
                if is_deviation(s):
                    line += f"; ours {_show(s['ours'])}: {s['reason']}"
                out.append(line)
    out += ["", "## S2AP's own values", ""]
    for field, spec in (ledger.get("s2ap") or {}).items():
        out.append(f"- `{field}`: " + (spec.get("not_public") or f"{_show(spec['value'])} ({spec['source']})"))
    out += ["", "## Methods that use another method's recipe", ""]
    for method, alias in (ledger.get("aliases") or {}).items():
        out.append(f"- {method}: {alias['as']}'s entries; {alias['reason']}")
    out += ["", "## Sources", ""]
    out += [f"- `{k}`: {v}" for k, v in sources.items()]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.core.recipes", description=__doc__.split("\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", metavar="PATH", help="write the ledger page (docs/recipes.md)")
    group.add_argument("--check", metavar="PATH", help="fail when PATH is not the generated page")
    args = parser.parse_args(argv)
    text = render()
    if args.write:

        with atomic_open(args.write, "w") as fh:
            fh.write(text)
        return 0
    if Path(args.check).read_text() != text:
        print(f"{args.check} is not the page the ledger generates; run: python -m benchmark.core.recipes "
              f"--write {args.check}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
