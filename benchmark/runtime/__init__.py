"""How jobs run on a machine: the Snakemake runner and its lock, CPU threads, GPU slots, stop
signals, progress lines. Below everything that trains; imports only ``benchmark.core``."""
