"""How a grid cell's values are spelled in paths and keys: one spelling per sparsity and per S2AP
value. Everything that names a cell (the config, the entries, the paper tables) shares these."""
from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from benchmark.core.choices import S2AP_GRID_VALUES as S2AP_CHOICES
from benchmark.core.choices import S2AP_NA, S2AP_NA_PATH


def canonical_sparsity(value: Any) -> str:
    """One spelling per sparsity, for paths and keys: 90, 90.0, "90", "90.0" -> "90"; 99.5 -> "99.5"."""
    if isinstance(value, bool):
        raise ValueError(f"sparsity must be a number, got {value!r}")
    try:
        dec = Decimal(str(float(value) if not isinstance(value, str) else value.strip()))
    except (InvalidOperation, ValueError, TypeError):
        raise ValueError(f"sparsity must be a number in percent, got {value!r}") from None
    if not dec.is_finite():
        raise ValueError(f"sparsity must be finite, got {value!r}")
    text = format(dec.normalize(), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def s2ap_to_path(s2ap: str) -> str:
    return S2AP_NA_PATH if s2ap == S2AP_NA else s2ap


def s2ap_from_path(text: str) -> str:
    return S2AP_NA if text == S2AP_NA_PATH else text


def method_overrides(cfg: Mapping[str, Any], method: str | None) -> dict[str, Any]:
    return dict((cfg.get("methods") or {}).get(method) or {}) if method else {}


def s2ap_search_value(s2ap: str) -> str:
    """The mask-search half of a grid s2ap value: on and score search with the score-space step;
    off and awp search without it, so each pair shares one prune job."""
    if s2ap == S2AP_NA:
        return S2AP_NA
    if s2ap in ("on", "score"):
        return "on"
    if s2ap in ("off", "awp"):
        return "off"
    raise ValueError(f"unknown s2ap value {s2ap!r}; valid choices: {', '.join((*S2AP_CHOICES, S2AP_NA))}")


def runs_finetune(cfg: Mapping[str, Any], method: str, traits: Mapping[str, bool]) -> bool:
    """Whether a method's finetune trains: it needs one, or the preset gives it epochs
    (``stage_config`` gives a method that needs none 0 epochs otherwise)."""
    if traits.get("needs_finetune", True):
        return True
    return int((method_overrides(cfg, method).get("finetune") or {}).get("epochs", 0)) > 0


def effective_variant(cfg: Mapping[str, Any], method: str, variant: str,
                      traits: Mapping[str, bool]) -> str:
    """The s2ap value a method really runs for a grid value: the one place that says which
    variants are the same job. A method that learns no scores runs "n/a"; one whose finetune
    does not train (RST) cannot take AWP, so its "score" is its "on" and its "awp" its "off".
    The planner (``grid_cells``) schedules each effective value once, and the tables show a
    variant that changes nothing as the method's other row."""
    if not traits.get("learns_scores", True):
        return S2AP_NA
    if variant not in S2AP_CHOICES:
        raise ValueError(f"{method}: unknown s2ap value {variant!r}; valid choices: {', '.join(S2AP_CHOICES)}")
    if not runs_finetune(cfg, method, traits):
        return s2ap_search_value(variant)
    return variant
