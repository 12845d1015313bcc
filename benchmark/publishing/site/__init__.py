"""The static web leaderboard: ``build_site(runs, out_dir, ...)`` (benchmark.publishing.site.generator)."""
from benchmark.publishing.site.generator import build_site, site_data

__all__ = ["build_site", "site_data"]
