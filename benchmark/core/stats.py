"""Confidence intervals and paired tests on per-image correctness flags.

Torch-free (the aggregation step imports this without paying for torch). The exact binomial tail
of McNemar's test is summed with integers (math.comb), so it stays exact for any n; the
t-interval over seeds takes Student's t quantile from scipy (imported when first needed).

Two questions, two tools. McNemar's test asks whether two given models differ on these test
images: its only noise is which images were drawn. A method effect (S2AP against the plain method)
also varies from one seed to the next (another dense model, another search), usually far more than
the test images vary; the t-interval over the per-seed differences (``seed_interval``) measures
that, and it is the one to read for "does S2AP help".

Flags travel between stages as strings of '0'/'1', one character per test image in test order.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion, clipped to [0, 1].

    n = 0 carries no information and gives (0, 1). 50/100 gives (0.4038, 0.5962).
    """
    if n < 0 or correct < 0 or correct > n:
        raise ValueError(f"need 0 <= correct <= n, got correct={correct}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4 * n * n)) / denom
    # at p = 0 or 1 the bound equals p analytically; rounding must not push it past
    lo = 0.0 if correct == 0 else max(0.0, centre - half)
    hi = 1.0 if correct == n else min(1.0, centre + half)
    return lo, hi


def seed_interval(values: Sequence[float], level: float = 0.95,
                  min_seeds: int = 3) -> tuple[float, float, float]:
    """(mean, low, high): the two-sided Student-t interval of the mean of per-seed values,
    mean -+ t_{(1 + level) / 2, n - 1} * sd / sqrt(n) with the sample sd (n - 1). NaN bounds for
    fewer than ``min_seeds`` values (two seeds give an interval too wide to say anything, and
    one none); NaN mean for no values."""
    vals = [float(v) for v in values]
    n = len(vals)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = sum(vals) / n
    if n < max(min_seeds, 2):
        return mean, math.nan, math.nan
    from scipy.stats import t  # deferred: scipy

    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    half = float(t.ppf((1.0 + level) / 2.0, n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def _as_bools(flags: Any) -> list[bool]:
    if isinstance(flags, str):
        return str_to_flags(flags)
    if hasattr(flags, "tolist"):  # torch tensor or numpy array
        flags = flags.tolist()
    return [bool(f) for f in flags]


def mcnemar(flags_a: Any, flags_b: Any) -> dict[str, Any]:
    """Exact two-sided McNemar test on paired per-image flags (strings, lists or tensors).

    b = images A gets right and B gets wrong, c = the reverse. Under the null (A and B equally
    accurate on these images) b ~ Binomial(b + c, 1/2); p = min(1, 2 * P(X <= min(b, c))).
    The exact test is used at every size: the integer sum is cheap even for 10,000 discordant
    pairs, and it avoids the chi-square approximation's error when b + c is small.
    """
    a, b_ = _as_bools(flags_a), _as_bools(flags_b)
    if len(a) != len(b_):
        raise ValueError(f"paired flags must cover the same images: {len(a)} vs {len(b_)}")
    b = sum(1 for x, y in zip(a, b_) if x and not y)
    c = sum(1 for x, y in zip(a, b_) if y and not x)
    n = b + c
    if n == 0:
        p = 1.0
    else:
        tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
        # int / int is correctly rounded in Python even when 2**n overflows a float
        p = min(1.0, (2 * tail) / (1 << n))
    return {"b": b, "c": c, "n_pairs": len(a), "p_value": p}


def flags_to_str(flags: Any) -> str:
    """'0'/'1' string from a bool tensor, array, list or an existing flag string."""
    if isinstance(flags, str):
        str_to_flags(flags)  # validates
        return flags
    return "".join("1" if f else "0" for f in _as_bools(flags))


def str_to_flags(s: str, as_tensor: bool = False) -> Any:
    """Inverse of flags_to_str: a list of bools, or a torch.BoolTensor with as_tensor=True."""
    if not isinstance(s, str) or (s and s.strip("01")):
        bad = sorted(set(s) - {"0", "1"}) if isinstance(s, str) else type(s).__name__
        raise ValueError(f"flag string may hold only '0' and '1', found {bad}")
    flags = [ch == "1" for ch in s]
    if as_tensor:
        import torch  # deferred: torch

        return torch.tensor(flags, dtype=torch.bool)
    return flags


def count(flags: Any) -> tuple[int, int]:
    """(correct, n) of a flag string / list / tensor."""
    f = _as_bools(flags)
    return sum(f), len(f)


def concat_flags(parts: Iterable[str]) -> str:
    return "".join(parts)


def pooled(counts: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """Sum of (correct, n) pairs, e.g. over seeds, for a pooled Wilson interval."""
    return sum(c for c, _ in counts), sum(n for _, n in counts)
