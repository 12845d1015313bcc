"""Adversarial pruning benchmark: the library behind the Snakemake workflow (see docs/design.md)."""
__version__ = "0.1.0"
