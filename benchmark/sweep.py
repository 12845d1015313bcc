"""S2AP gamma sweep report: which gamma to use, chosen on validation numbers only.

Every sweep model is a mask search with the score step at one gamma (gamma 0 runs the same
two-pass path and equals the plain method), followed by the plain finetune (no AWP), so the
sweep isolates the score-space step. A gamma is selected per (dataset, arch, method, sparsity) by
the mean robust (PGD) accuracy on the fixed validation slice after finetuning; ties go to the
smaller gamma. The test set is never read.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .io import atomic_write_text, load_checkpoint

KEYS = ["dataset", "arch", "method", "sparsity"]


def sweep_row(path: str | Path) -> dict:
    ckpt = load_checkpoint(path)
    meta = json.loads(ckpt["meta"])
    s2ap = (meta.get("configs", {}).get("prune") or {}).get("s2ap")
    history = meta.get("history") or []
    last = history[-1] if history else {}
    search = (meta.get("search") or {}).get("mask_val") or {}
    return {
        "dataset": meta["dataset"], "arch": meta["arch"], "method": meta["method"],
        "sparsity": float(meta["sparsity"]), "seed": int(meta["seed"]),
        "gamma": float(s2ap["gamma"]) if s2ap else 0.0,
        "mask_val_pgd": search.get("val_pgd"), "mask_val_clean": search.get("val_clean"),
        "val_pgd": last.get("val_pgd", search.get("val_pgd")),
        "val_clean": last.get("val_clean", search.get("val_clean")),
        "path": str(path),
    }


def sweep_report(models: list[str | Path], out: str | Path) -> pd.DataFrame:
    rows = pd.DataFrame([sweep_row(p) for p in models])
    if rows["val_pgd"].isna().any():
        raise ValueError("the sweep needs validation numbers (data.val_size > 0 and val_attack_steps > 0)")
    table = (rows.groupby(KEYS + ["gamma"], as_index=False)
             .agg(val_pgd=("val_pgd", "mean"), val_clean=("val_clean", "mean"),
                  mask_val_pgd=("mask_val_pgd", "mean"), n_seeds=("seed", "nunique")))
    table["selected"] = False
    for _, group in table.groupby(KEYS):
        best = group.sort_values(["val_pgd", "gamma"], ascending=[False, True]).index[0]
        table.loc[best, "selected"] = True
    table = table.sort_values(KEYS + ["gamma"]).reset_index(drop=True)
    out = Path(out)
    atomic_write_text(out, table.to_csv(index=False))
    shown = table.copy()
    for col in ("val_pgd", "val_clean", "mask_val_pgd"):
        shown[col] = (100 * shown[col]).round(2)
    md = ["# S2AP gamma sweep (validation slice, %; selected by mean val PGD accuracy after finetune)",
          "", shown.to_markdown(index=False), ""]
    atomic_write_text(out.with_suffix(".md"), "\n".join(md))
    return table
