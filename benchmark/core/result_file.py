"""The result JSON of one evaluated model: built, checked, written and read in one place.

Long because every rule a result must satisfy beyond its schema is in this one reader, which every
consumer uses.

The format is ``benchmark/schemas/result.schema.json`` (JSON Schema). The writer validates a record
before it writes it (atomically), and every reader goes through ``read_result``, which validates
the file again and then checks the rules a schema cannot express (``check_record``):

- counts: 0 <= correct <= n, acc = correct / n, the flag string of every metric holds n
  characters with exactly ``correct`` ones;
- per image: an image robust to PGD or to AutoAttack is clean-correct (the attacks only attack
  clean-correct images), so AutoAttack <= clean on the same images;
- eps: every attack's recorded eps, and the eps each AutoAttack attack object held when it ran,
  equal the result's eps; no adversarial image lies further than eps from its original;
- protocol: what ran (image counts, PGD steps and step size, AutoAttack version, attack list,
  seed, batch and shard size) equals the resolved protocol, and the protocol equals the evaluate
  config recorded with the result (the preset's); a batch size the preset sets is the one that
  ran, one it leaves null was chosen from the free memory (``batch_size_source``);
- sparsity: the measured sparsity is the zero count over the weight count, layer sums add up, and
  every weight the mask prunes is zero (zeros = pruned + kept_zero).

- submission (an external model, ``benchmark.publishing.submission``): the measured values it records are
  the metrics' (with their Wilson intervals), and its list of unconfirmed claims is the one the
  claims and those intervals give.

Optional fields: ``model`` ({path, sha256} of the evaluated file: the exports take the model from
there) and ``submission``.

An image robust to AutoAttack but broken by PGD is legitimate (the attacks run independently);
``pgd_broken_aa_robust`` counts such images so the leaderboard can flag them.

Torch-free (the aggregation imports it); jsonschema is imported on first validation.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from benchmark.core import safe_json
from benchmark.core.io import _json_default, atomic_write_json
from benchmark.core.paths import SCHEMAS_DIR
from benchmark.core.provenance import config_hash as _hash
from benchmark.core.stats import wilson_interval

SCHEMA_VERSION = 2
SCHEMA_FILE = SCHEMAS_DIR / "result.schema.json"
METRICS = ("clean", "pgd", "autoattack")
ATTACKED = ("pgd", "autoattack")

# The attack lists pyautoattack 0.2.0's AutoAttack._set_version assigns (benchmark.evaluation.autoattack
# runs them): what a result may record, and what "standard" means.
AUTOATTACK_VERSIONS: dict[str, tuple[str, ...]] = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "plus": ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"),
    "rand": ("apgd-ce", "apgd-dlr"),
}
STRUCTURES = {"weight": "unstructured", "channel": "structured", "in_channel": "structured"}

_EPS_REL = 1e-9
# float32 pixels: x + eps - x is eps up to one rounding of a value in [0, 2]
_PERTURBATION_TOL = 1e-6


class ResultError(ValueError):
    """A result file that breaks a rule: ``path``, ``rule`` (a short name) and what is wrong."""

    def __init__(self, rule: str, message: str, path: str | Path | None = None) -> None:
        self.rule, self.detail, self.path = rule, message, None if path is None else str(path)
        super().__init__(self._text())

    def _text(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{where}rule '{self.rule}': {self.detail}"

    def at(self, path: str | Path) -> ResultError:
        return ResultError(self.rule, self.detail, path)


# ---------------------------------------------------------------- schema
@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text())


def _schema_errors(record: Any) -> list[ResultError]:
    import jsonschema  # deferred: jsonschema

    if isinstance(record, dict) and record.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
        return [ResultError("schema_version", (
            f"schema_version {record.get('schema_version')!r}; this suite reads version "
            f"{SCHEMA_VERSION}. The file was written by an older version of the suite: delete "
            f"it and rerun the workflow, whose evaluate job writes it again"))]
    validator = jsonschema.Draft202012Validator(load_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(record))
    if error is None:
        return []
    where = "/".join(str(p) for p in error.absolute_path) or "<top level>"
    return [ResultError("schema", f"{where}: {error.message}")]


# ---------------------------------------------------------------- rules beyond the schema
def _close(a: float, b: float) -> bool:
    return math.isclose(float(a), float(b), rel_tol=_EPS_REL, abs_tol=0.0)


def _count_rules(rec: dict) -> Iterable[ResultError]:
    metrics, flags = rec["metrics"], rec["flags"]
    for name in METRICS:
        m, f = metrics[name], flags[name]
        if (m is None) != (f is None):
            yield ResultError("flags", f"metrics.{name} is {'absent' if m is None else 'present'} "
                                       f"but flags.{name} is {'absent' if f is None else 'present'}")
            continue
        if m is None:
            continue
        if not 0 <= m["correct"] <= m["n"]:
            yield ResultError("counts", f"metrics.{name}: correct {m['correct']} of n {m['n']} "
                                        f"(need 0 <= correct <= n)")
        if not math.isclose(m["acc"], m["correct"] / m["n"], rel_tol=1e-12, abs_tol=1e-12):
            yield ResultError("acc", f"metrics.{name}: acc {m['acc']} != correct / n = "
                                     f"{m['correct']}/{m['n']}")
        if len(f) != m["n"]:
            yield ResultError("flags", f"flags.{name} holds {len(f)} images, metrics.{name}.n is "
                                       f"{m['n']}")
        if f.count("1") != m["correct"]:
            yield ResultError("flags", f"flags.{name} holds {f.count('1')} ones, "
                                       f"metrics.{name}.correct is {m['correct']}")


def _per_image_rules(rec: dict) -> Iterable[ResultError]:
    metrics, flags = rec["metrics"], rec["flags"]
    clean = flags["clean"]
    for name in ATTACKED:
        f = flags[name]
        if f is None:
            continue
        if len(f) > len(clean):
            yield ResultError("coverage", f"{name} covers {len(f)} images but the clean flags only "
                                          f"{len(clean)}: its images cannot be checked")
            continue
        bad = [i for i, (a, c) in enumerate(zip(f, clean)) if a == "1" and c == "0"]
        if bad:
            yield ResultError("robust-implies-clean", (
                f"{len(bad)} image(s) robust to {name} are misclassified clean (first index "
                f"{bad[0]}); an attack only keeps images the model gets right"))
        same = clean[:len(f)].count("1")
        if metrics[name]["correct"] > same:
            yield ResultError(f"{name}-above-clean", (
                f"{name} accuracy {metrics[name]['correct']}/{len(f)} exceeds clean accuracy "
                f"{same}/{len(f)} on the same images"))


def _eps_rules(rec: dict) -> Iterable[ResultError]:
    eps = rec["eps"]
    if not _close(rec["protocol"]["eps"], eps):
        yield ResultError("eps", f"protocol eps {rec['protocol']['eps']} != result eps {eps}")
    for name in ATTACKED:
        m = rec["metrics"][name]
        if m is None:
            continue
        if not _close(m["eps"], eps):
            yield ResultError("eps", f"metrics.{name}.eps {m['eps']} != result eps {eps}")
        if m["max_perturbation"] > eps * (1 + _EPS_REL) + _PERTURBATION_TOL:
            yield ResultError("perturbation", (
                f"metrics.{name}.max_perturbation {m['max_perturbation']} exceeds eps {eps}: "
                f"an adversarial image left the threat model"))
    aa = rec["metrics"]["autoattack"]
    if aa is not None:
        if set(aa["attack_params"]) != set(aa["attacks"]):
            yield ResultError("attack-params", (
                f"metrics.autoattack.attack_params covers {sorted(aa['attack_params'])}, the run "
                f"lists attacks {aa['attacks']}"))
        for attack, params in aa["attack_params"].items():
            if not _close(params["eps"], eps):
                yield ResultError("eps", (f"AutoAttack's {attack} ran at eps {params['eps']}, the "
                                          f"result's eps is {eps}"))


_PGD_RAN = (("n", "pgd_n"), ("steps", "pgd_steps"), ("step_size", "pgd_step_size"),
            ("seed", "pgd_seed"), ("batch_size", "batch_size"))
_AA_RAN = ("version", "attacks", "standard", "seed", "batch_size", "shard_size")


def _protocol_rules(rec: dict) -> Iterable[ResultError]:
    """What ran equals the resolved protocol."""
    proto, metrics = rec["protocol"], rec["metrics"]
    if metrics["clean"]["n"] != proto["clean_n"]:
        yield ResultError("protocol", f"clean ran on {metrics['clean']['n']} images, the protocol "
                                      f"asks {proto['clean_n']}")
    for ran, asked in _PGD_RAN:
        if not _same(metrics["pgd"][ran], proto[asked]):
            yield ResultError("protocol", f"PGD ran with {ran} {metrics['pgd'][ran]!r}, the "
                                          f"protocol asks {asked} {proto[asked]!r}")
    aa, aa_proto = metrics["autoattack"], proto["autoattack"]
    if (aa is None) != (aa_proto is None):
        yield ResultError("protocol", f"AutoAttack {'did not run' if aa is None else 'ran'} but the "
                                      f"protocol {'asks for it' if aa is None else 'has none'}")
        return
    if aa is None:
        return
    if aa["n"] != aa_proto["n_images"]:
        yield ResultError("protocol", f"AutoAttack ran on {aa['n']} images, the protocol asks "
                                      f"{aa_proto['n_images']}")
    for key in _AA_RAN:
        if not _same(aa[key], aa_proto[key]):
            yield ResultError("protocol", f"AutoAttack ran with {key} {aa[key]!r}, the protocol "
                                          f"asks {aa_proto[key]!r}")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and _close(a, b)
    return a == b


def _n_of(value: Any, total: int) -> int:
    return total if value is None else min(int(value), total)


def _config_rules(rec: dict) -> Iterable[ResultError]:
    """The resolved protocol equals the evaluate config recorded with the result (the preset's)."""
    cfg = ((rec["config"].get("evaluate") or {}).get("evaluate"))
    if not isinstance(cfg, dict):
        yield ResultError("config", "config.evaluate.evaluate (the preset's evaluate section) is "
                                    "missing: the protocol cannot be checked against the preset")
        return
    proto = rec["protocol"]
    total = proto["test_images"]
    if cfg.get("eps") is not None and not _close(cfg["eps"], proto["eps"]):
        yield ResultError("config", f"evaluated at eps {proto['eps']}, the preset asks "
                                    f"{cfg['eps']}")
    checks = [("clean_n", _n_of(cfg.get("clean_n"), total)), ("pgd_n", _n_of(cfg.get("pgd_n"), total))]
    if "pgd_steps" in cfg:
        checks.append(("pgd_steps", int(cfg["pgd_steps"])))
    if cfg.get("pgd_step_size") is not None:
        checks.append(("pgd_step_size", float(cfg["pgd_step_size"])))
    if "pgd_seed" in cfg:
        checks.append(("pgd_seed", int(cfg["pgd_seed"])))
    for key, want in checks:
        if not _same(proto[key], want):
            yield ResultError("config", f"protocol {key} {proto[key]!r}, the preset asks {want!r}")
    yield from _batch_rules(cfg, proto, "")
    aa_cfg, aa = cfg.get("autoattack"), proto["autoattack"]
    wants_aa = bool(aa_cfg) and (aa_cfg.get("n_images") is None or int(aa_cfg["n_images"]) > 0)
    if wants_aa != (aa is not None):
        yield ResultError("config", f"AutoAttack {'missing' if wants_aa else 'ran'} although the "
                                    f"preset {'asks for it' if wants_aa else 'turns it off'}")
        return
    if aa is None:
        return
    version = aa_cfg.get("version", "standard")
    full = list(AUTOATTACK_VERSIONS.get(version, ()))
    attacks = full if aa_cfg.get("attacks") is None else [a for a in full if a in
                                                          {str(x).lower() for x in aa_cfg["attacks"]}]
    for key, want in (("n_images", _n_of(aa_cfg.get("n_images"), total)), ("version", version),
                      ("attacks", attacks), ("seed", int(aa_cfg.get("seed", 0))),
                      ("standard", version == "standard" and attacks == full)):
        if aa[key] != want:
            yield ResultError("config", f"protocol autoattack.{key} {aa[key]!r}, the preset asks "
                                        f"{want!r}")
    yield from _batch_rules(aa_cfg, aa, "autoattack.")


def _batch_rules(cfg: dict, proto: dict, where: str) -> Iterable[ResultError]:
    """A batch size the preset sets is the one that ran; one it leaves null was chosen from the
    free memory (benchmark.evaluation.batching) and says so."""
    if "batch_size" not in cfg:
        return
    source = proto.get("batch_size_source", "preset")
    if cfg["batch_size"] is None:
        if source != "free memory":
            yield ResultError("config", f"protocol {where}batch_size {proto['batch_size']!r} comes "
                                        f"from the {source}, but the preset leaves it null (to be "
                                        f"chosen from the free memory)")
    elif source != "preset" or proto["batch_size"] != int(cfg["batch_size"]):
        yield ResultError("config", f"protocol {where}batch_size {proto['batch_size']!r} "
                                    f"(from the {source}), the preset asks {cfg['batch_size']!r}")


def _sparsity_rules(rec: dict) -> Iterable[ResultError]:
    sp = rec["sparsity"]
    if not math.isclose(sp["nominal"], float(rec["cell"]["sparsity"]) / 100.0, abs_tol=1e-12):
        yield ResultError("sparsity", f"sparsity.nominal {sp['nominal']} != cell sparsity "
                                      f"{rec['cell']['sparsity']} %")
    zeros, total = sp["zeros"], sp["total"]
    if zeros > total or not math.isclose(sp["measured"], zeros / total, abs_tol=1e-12):
        yield ResultError("sparsity", f"sparsity.measured {sp['measured']} != zeros / total = "
                                      f"{zeros}/{total}")
    layers = sp["layers"].values()
    if sum(v["total"] for v in layers) != total or sum(v["zeros"] for v in layers) != zeros:
        yield ResultError("sparsity", "the per-layer weight or zero counts do not add up to the "
                                      "global ones")
    for name, v in sp["layers"].items():
        if v["zeros"] > v["total"] or not math.isclose(v["sparsity"], v["zeros"] / v["total"],
                                                       abs_tol=1e-12):
            yield ResultError("sparsity", f"layer {name}: sparsity {v['sparsity']} != "
                                          f"{v['zeros']}/{v['total']}")
    mask = sp["mask"]
    if mask is None:
        if sp["kept_zero"] is not None or any(v["mask_kept"] is not None for v in layers):
            yield ResultError("sparsity", "mask counts recorded without a mask")
        return
    kept, kept_zero = mask["kept"], sp["kept_zero"]
    if kept_zero is None or kept > total or zeros != (total - kept) + kept_zero:
        yield ResultError("sparsity", (
            f"zeros {zeros} != weights the mask prunes ({total} - {kept}) + kept zeros "
            f"{kept_zero}: a weight outside the mask is non-zero, or the counts are wrong"))
    if not math.isclose(mask["sparsity"], 1.0 - kept / total, abs_tol=1e-12):
        yield ResultError("sparsity", f"sparsity.mask.sparsity {mask['sparsity']} != 1 - "
                                      f"{kept}/{total}")
    if sum((v["mask_kept"] or 0) for v in layers) != kept:
        yield ResultError("sparsity", "the per-layer mask counts do not add up to the global one")


def _cell_rules(rec: dict) -> Iterable[ResultError]:
    cell_hash = rec["cell"].get("config_hash")
    if cell_hash is not None and cell_hash != rec["config_hash"]:
        yield ResultError("config-hash", f"cell.config_hash {cell_hash} != config_hash "
                                         f"{rec['config_hash']}")
    aa = rec["metrics"]["autoattack"]
    if aa is not None and aa["lowered_after_apgd"] != bool(aa["lowered_by"]):
        yield ResultError("lowered", "lowered_after_apgd disagrees with lowered_by")


# ---------------------------------------------------------------- external submissions
# A claimed sparsity is confirmed when it lies this close (percentage points) to the zero count we
# measure: the count is exact, but a paper's "95 %" may be rounded or leave out a layer.
SUBMISSION_SPARSITY_TOLERANCE = 0.5


def submission_measured(record: Mapping[str, Any]) -> dict[str, Any]:
    """What we measured of a submission, in % (the Wilson 95 % interval beside each accuracy)."""

    def pct(name: str) -> tuple[float | None, list[float] | None]:
        m = record["metrics"][name]
        if m is None:
            return None, None
        lo, hi = wilson_interval(m["correct"], m["n"])
        return 100.0 * m["acc"], [100.0 * lo, 100.0 * hi]

    clean, clean_ci = pct("clean")
    aa, aa_ci = pct("autoattack")
    return {"sparsity": 100.0 * record["sparsity"]["measured"], "clean": clean,
            "clean_ci": clean_ci, "autoattack": aa, "autoattack_ci": aa_ci}


def claims_outside(claims: Mapping[str, Any], measured: Mapping[str, Any]) -> list[str]:
    """The claims our measurement does not confirm: an accuracy outside our 95 % interval, a
    sparsity further than SUBMISSION_SPARSITY_TOLERANCE points from the measured one (an
    accuracy we did not measure cannot be confirmed either)."""
    out = []
    if abs(float(claims["sparsity"]) - float(measured["sparsity"])) > SUBMISSION_SPARSITY_TOLERANCE:
        out.append("sparsity")
    for name in ("clean", "autoattack"):
        claim = claims.get(name)
        if claim is None:
            continue
        ci = measured.get(f"{name}_ci")
        if ci is None or not ci[0] - 1e-9 <= float(claim) <= ci[1] + 1e-9:
            out.append(name)
    return out


def _submission_rules(rec: dict) -> Iterable[ResultError]:
    sub = rec.get("submission")
    if sub is None:
        return
    if sub["name"] != rec["cell"]["method"] or rec["cell"]["s2ap"] != "n/a":
        yield ResultError("submission", f"a submission's cell is method {sub['name']!r} with s2ap "
                                        f"'n/a', not {rec['cell']['method']!r}/{rec['cell']['s2ap']!r}")
    if not math.isclose(float(sub["claims"]["sparsity"]), float(rec["cell"]["sparsity"]),
                        abs_tol=1e-9):
        yield ResultError("submission", f"the cell's sparsity {rec['cell']['sparsity']} is not the "
                                        f"claimed {sub['claims']['sparsity']}")
    want = submission_measured(rec)
    for key, value in want.items():
        got = sub["measured"].get(key)
        same = (got is None and value is None) or (
            got is not None and value is not None and
            all(math.isclose(a, b, abs_tol=1e-9) for a, b in
                zip(got if isinstance(got, list) else [got], value if isinstance(value, list) else [value])))
        if not same:
            yield ResultError("submission", f"submission.measured.{key} {got!r} is not what the "
                                            f"result's metrics give ({value!r})")
    outside = claims_outside(sub["claims"], want)
    if sorted(sub["outside"]) != sorted(outside):
        yield ResultError("submission", f"submission.outside {sub['outside']} != the claims outside "
                                        f"our intervals {outside}")


_RULES = (_count_rules, _per_image_rules, _eps_rules, _protocol_rules, _config_rules,
          _sparsity_rules, _cell_rules, _submission_rules)


def check_record(record: Any) -> list[ResultError]:
    """Every rule the record breaks (the schema first: the other rules assume its types)."""
    errors = _schema_errors(record)
    if errors:
        return errors
    return [e for rule in _RULES for e in rule(record)]


def validate_record(record: Any, path: str | Path | None = None) -> dict[str, Any]:
    """The record if it breaks no rule; else ResultError (with ``path``) for the first rule."""
    errors = check_record(record)
    if errors:
        raise errors[0].at(path) if path is not None else errors[0]
    return record


# ---------------------------------------------------------------- build, write, read
def structure_of(granularity: str | None) -> str:
    """'structured' for channel masks, 'unstructured' for weight masks and for a model without
    masks (the dense model)."""
    if granularity is None:
        return "unstructured"
    if granularity not in STRUCTURES:
        raise ValueError(f"unknown mask granularity {granularity!r}; valid: {sorted(STRUCTURES)}")
    return STRUCTURES[granularity]


def _plain(obj: Any) -> Any:
    """The record exactly as JSON will give it back (tuples become lists, tensors' numbers plain)."""

    return json.loads(json.dumps(obj, default=_json_default))


def build_record(*, cell: Mapping[str, Any], structure: str, configs: Mapping[str, Any],
                 evaluation: Mapping[str, Any], sparsity: Mapping[str, Any],
                 timing: Mapping[str, float], diagnostics: Mapping[str, Any],
                 history: Mapping[str, Any], provenance: Mapping[str, Any],
                 config_hash: str | None = None, model: Mapping[str, Any] | None = None,
                 submission: Mapping[str, Any] | None = None, search: Mapping[str, Any] | None = None,
                 class_balance: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A result record from its parts (not yet validated; write_result validates).

    ``evaluation`` is benchmark.evaluation.protocol.evaluate_model's output (metrics, flags, protocol),
    ``sparsity`` is benchmark.core.masking.measure_sparsity's, ``configs`` every stage's config by
    stage name, ``provenance`` benchmark.core.provenance.provenance()'s. ``config_hash`` defaults to
    the cell's, else a hash of the configs without seeds. ``model``: {"path", "sha256"} of the
    evaluated file; ``submission``: an external submission's block without ``measured`` and
    ``outside``, which are filled in here from the evaluation.
    ``search`` is the mask search's report
    (whether the mask was learned; HARP: its budget and whether the rates were projected onto
    it), ``class_balance`` the majority class's share of the validation slice and of the clean
    test images; both are left out when not given (the dense model has no search).
    """
    if config_hash is None:
        config_hash = cell.get("config_hash")
    if config_hash is None:

        config_hash = _hash(configs)
    record = {
        "schema_version": SCHEMA_VERSION,
        "cell": dict(cell),
        "structure": structure,
        "config": dict(configs),
        "config_hash": config_hash,
        "eps": evaluation["protocol"]["eps"],
        "protocol": evaluation["protocol"],
        "sparsity": {"nominal": float(cell["sparsity"]) / 100.0, **sparsity},
        "metrics": evaluation["metrics"],
        "flags": evaluation["flags"],
        "timing": dict(timing),
        "diagnostics": dict(diagnostics),
        "history": dict(history),
        "provenance": dict(provenance),
    }
    if model is not None:
        record["model"] = dict(model)
    if search is not None:
        record["search"] = dict(search)
    if class_balance is not None:
        record["class_balance"] = dict(class_balance)
    record = _plain(record)
    if submission is not None:
        sub = _plain(dict(submission))
        sub["measured"] = submission_measured(record)
        sub["outside"] = claims_outside(sub["claims"], sub["measured"])
        record["submission"] = sub
    return record


def write_result(path: str | Path, record: Mapping[str, Any]) -> Path:
    """Validates the record and writes it atomically; a record that breaks a rule is never
    written (ResultError naming the rule and the target path)."""
    record = _plain(record)
    validate_record(record, path)
    return atomic_write_json(path, record)


def read_result(path: str | Path) -> dict[str, Any]:
    """The validated record of a result file; ResultError naming the file and the rule else."""
    path = Path(path)
    try:
        record = safe_json.read_json_file(path)
    except safe_json.JSONFileError as exc:
        rule = "json" if exc.reason.startswith(("not valid JSON", "nested", "not UTF-8")) else "file"
        raise ResultError(rule, exc.reason, path) from None
    return validate_record(record, path)


def pgd_broken_aa_robust(record: Mapping[str, Any]) -> int:
    """Images robust to AutoAttack but broken by PGD (on the images both attacked). Legitimate:
    the attacks run independently, and PGD's random start may find what AutoAttack missed."""
    pgd, aa = record["flags"]["pgd"], record["flags"].get("autoattack")
    if not pgd or not aa:
        return 0
    return sum(1 for a, p in zip(aa, pgd) if a == "1" and p == "0")


__all__ = ["SCHEMA_VERSION", "SCHEMA_FILE", "AUTOATTACK_VERSIONS", "ResultError", "load_schema",
           "check_record", "validate_record", "structure_of", "build_record", "write_result",
           "read_result", "pgd_broken_aa_robust", "SUBMISSION_SPARSITY_TOLERANCE",
           "submission_measured", "claims_outside"]
