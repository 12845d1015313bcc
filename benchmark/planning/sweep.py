"""S2AP gamma sweep report: which gamma each method should use, chosen on validation numbers only.

Every sweep model is a mask search with the score step at one gamma (gamma 0 runs the same
two-pass path and equals the plain method), followed by the plain finetune (no AWP), so the
sweep isolates the score-space step. It runs for every method, sparsity and seed of the sweep.

Selection, one gamma per (dataset, arch, method): among the positive gammas, the one with the best
validation PGD accuracy after finetuning, averaged over seeds within each sparsity and then over
the sparsities (each sparsity weighs the same); ties go to the smaller gamma. Gamma 0 is the plain
method, S2AP's reference, never its setting: selecting it would make every "S2AP on" cell the plain
search, and the study would compare the method with itself. Whether the selected gamma beats gamma
0 on validation is reported beside it (and says, before the test set is read, whether the sweep
expects S2AP to help). The test set is never read. The report
shows the per-seed numbers beside the means, how far the selection is from gamma 0 in units of the
seeds' spread, and how often the score step flipped nothing (an inactive step is the plain
method's step). A selection from fewer than two seeds is marked provisional.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from benchmark.core.io import atomic_write_text, load_checkpoint

METHOD_KEYS = ["dataset", "arch", "method"]
KEYS = METHOD_KEYS + ["sparsity"]
MIN_SEEDS = 2


def sweep_row(path: str | Path) -> dict:
    ckpt = load_checkpoint(path)
    meta = json.loads(ckpt["meta"])
    s2ap = (meta.get("configs", {}).get("prune") or {}).get("s2ap")
    history = meta.get("history") or []
    last = history[-1] if history else {}
    search = (meta.get("search") or {}).get("mask_val") or {}
    diag = meta.get("diagnostics") or {}
    return {
        "dataset": meta["dataset"], "arch": meta["arch"], "method": meta["method"],
        "sparsity": float(meta["sparsity"]), "seed": int(meta["seed"]),
        "gamma": float(s2ap["gamma"]) if s2ap else 0.0,
        "mask_val_pgd": search.get("val_pgd"), "mask_val_clean": search.get("val_clean"),
        "val_pgd": last.get("val_pgd", search.get("val_pgd")),
        "val_clean": last.get("val_clean", search.get("val_clean")),
        "s2ap_noflip_fraction": diag.get("s2ap_noflip_fraction"),
        "s2ap_flip_fraction": diag.get("s2ap_flip_fraction"),
        "path": str(path),
    }


def _sd(values: pd.Series) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else math.nan


def sweep_report(models: list[str | Path], out: str | Path) -> pd.DataFrame:
    """Writes ``out`` (CSV: one row per method, sparsity and gamma, means over seeds and the
    per-seed values), ``<out stem>_seeds.csv`` (one row per model) and ``<out stem>.md``; returns
    the table. ``selected`` marks the gamma chosen for each method (at every sparsity)."""
    rows = pd.DataFrame([sweep_row(p) for p in models])
    if rows["val_pgd"].isna().any():
        raise ValueError("the sweep needs validation numbers (data.val_size > 0 and val_attack_steps > 0)")
    rows = rows.sort_values(KEYS + ["gamma", "seed"]).reset_index(drop=True)
    table = (rows.groupby(KEYS + ["gamma"], as_index=False)
             .agg(val_pgd=("val_pgd", "mean"), val_pgd_sd=("val_pgd", _sd),
                  val_clean=("val_clean", "mean"), mask_val_pgd=("mask_val_pgd", "mean"),
                  s2ap_noflip_fraction=("s2ap_noflip_fraction", "mean"),
                  n_seeds=("seed", "nunique")))
    per_seed = rows.groupby(KEYS + ["gamma"])[["seed", "val_pgd"]].apply(
        lambda g: " ".join(f"s{int(s)}:{v:.4f}" for s, v in zip(g["seed"], g["val_pgd"])))
    table["val_pgd_seeds"] = [per_seed[tuple(r)] for r in table[KEYS + ["gamma"]].itertuples(index=False)]
    # one score per (method, gamma): each sparsity's mean over seeds, then the mean over sparsities
    score = table.groupby(METHOD_KEYS + ["gamma"], as_index=False).agg(
        score=("val_pgd", "mean"), sparsities=("sparsity", "nunique"), min_seeds=("n_seeds", "min"))
    chosen = {}
    for key, group in score.groupby(METHOD_KEYS):
        positive = group[group["gamma"] > 0]
        if positive.empty:
            raise ValueError(f"the sweep for {'/'.join(key)} has no positive gamma to select "
                             "(gamma_sweep.gammas needs values above 0; gamma 0 is the plain method)")
        best = positive.sort_values(["score", "gamma"], ascending=[False, True]).iloc[0]
        chosen[key] = float(best["gamma"])
    table["selected"] = [chosen[tuple(k)] == g for k, g in
                         zip(table[METHOD_KEYS].itertuples(index=False), table["gamma"])]
    table = table.sort_values(KEYS + ["gamma"]).reset_index(drop=True)
    out = Path(out)
    atomic_write_text(out, table.to_csv(index=False))
    atomic_write_text(out.with_name(out.stem + "_seeds.csv"), rows.drop(columns=["path"]).to_csv(index=False))
    atomic_write_text(out.with_suffix(".md"), _markdown(table, score, chosen, rows))
    return table


def _markdown(table: pd.DataFrame, score: pd.DataFrame, chosen: dict, rows: pd.DataFrame) -> str:
    lines = ["# S2AP gamma sweep", "",
             "Validation slice only (the test set is never read). Each model: the mask search with "
             "S2AP's score step at gamma (gamma 0 = the plain method), then the plain finetune. "
             "Selection per method, among the positive gammas (gamma 0 is the reference, not a "
             "setting of S2AP): the best validation PGD accuracy after finetuning, mean over "
             "seeds within each sparsity, then over sparsities; ties to the smaller gamma. "
             "'Beats gamma 0' says whether the selection is ahead of the plain method on "
             "validation.", "",
             "## Selected gamma per method", ""]
    sel = []
    for key, gamma in sorted(chosen.items()):
        group = score[(score[METHOD_KEYS] == pd.Series(dict(zip(METHOD_KEYS, key)))).all(axis=1)]
        at = group[group["gamma"] == gamma].iloc[0]
        plain = group[group["gamma"] == 0.0]
        seeds = int(at["min_seeds"])
        sel.append({"Dataset": key[0], "Arch": key[1], "Method": key[2], "Selected gamma": f"{gamma:g}",
                    "Val PGD at it (%)": f"{100 * at['score']:.2f}",
                    "Val PGD at gamma 0 (%)": f"{100 * plain.iloc[0]['score']:.2f}" if len(plain) else "—",
                    "Beats gamma 0": ("—" if not len(plain) else
                                      "yes" if at["score"] > plain.iloc[0]["score"] else "no"),
                    "Sparsities": int(at["sparsities"]), "Seeds": seeds,
                    "Status": "selected" if seeds >= MIN_SEEDS else "provisional (one seed)"})
    lines += [pd.DataFrame(sel).to_markdown(index=False, disable_numparse=True), ""]
    lines += ["The preset lines that store the selection (under `methods:`; a provisional one stays "
              "`unselected`):", "", "```yaml"]
    for key, gamma in sorted(chosen.items()):
        status = "selected" if next(s for s in sel if s["Method"] == key[2] and s["Dataset"] == key[0]
                                    and s["Arch"] == key[1])["Status"] == "selected" else "unselected"
        lines += [f"  {key[2]}:  # {key[0]} / {key[1]}",
                  f"    s2ap: {{gamma: {gamma:g}, gamma_status: {status}}}"]
    lines += ["```", ""]
    shown = table.copy()
    for col in ("val_pgd", "val_pgd_sd", "val_clean", "mask_val_pgd"):
        shown[col] = (100 * shown[col]).round(2)
    shown["s2ap_noflip_fraction"] = shown["s2ap_noflip_fraction"].round(3)
    lines += ["## Per sparsity and gamma (%, mean and sd over seeds; per-seed validation PGD)", "",
              "s2ap_noflip_fraction: share of the score steps that flipped no mask entry (such a step "
              "is the plain method's step).", "",
              shown.to_markdown(index=False), ""]
    return "\n".join(lines)
