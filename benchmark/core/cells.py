"""How a grid cell's values are spelled in paths and keys: one spelling per sparsity and per S2AP
value. Everything that names a cell (the config, the entries, the paper tables) shares these."""
from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

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
