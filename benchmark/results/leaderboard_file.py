"""Reading a leaderboard CSV back (``leaderboard.csv``, ``s2ap_paired.csv``) with the types it was
written with; the aggregation writes them, the published columns, the site and publish read them."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

# columns of text that can look like numbers (a revision or hash of digits only: "0123456789")
TEXT_COLUMNS = ("revision", "config_hash", "seeds", "orig_config", "s2ap_config",
                "published_revision", "flag", "aa_attacks")


def read_leaderboard(path: str | Path) -> pd.DataFrame:
    """Reads leaderboard.csv / s2ap_paired.csv back. pandas' default would turn the s2ap value
    'n/a' into NaN, and a revision of digits into a number; only empty cells are missing values
    here."""
    return pd.read_csv(path, keep_default_na=False, na_values=[""],
                       dtype={c: str for c in TEXT_COLUMNS})
