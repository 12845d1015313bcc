"""Paper metadata of methods, read from their source without importing them.

A method states the paper it implements in its registration, as a literal::

    @register_method("hydra", ..., paper={"key": "Sehwag2020Hydra", "name": "HYDRA: ...",
                     "authors": "...", "venue": "NeurIPS 2020", "link": "https://arxiv.org/abs/2002.10509"})

(a method file written before ``paper=`` existed may state it as a literal class attribute
``paper = {...}`` of the registered class; that is still read. The S2AP plug-in, which is no
registered method, states its paper so on its score-step class.)

``key`` follows RobustBench's model names (first author, year, first word of the title). The
attribute is read with ``ast`` (benchmark/ never imports methods/, and the export must not pay for
torch), from the registered class itself only: a subclass that does not restate ``paper`` is a
different method and must not inherit another paper's name. The dense models are trained by the
suite, so their papers (the adversarial-training loss) live here.
"""
from __future__ import annotations

import ast
import functools
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from benchmark.core.paths import REPO_ROOT
from benchmark.core.registry import PAPER_FIELDS  # declared with register_method's paper=

METHODS_DIR = REPO_ROOT / "methods"

# The robust pretraining of the dense model, by training loss (train.loss of the pretrain stage).
TRAINING_PAPERS: dict[str, dict[str, str]] = {
    "pgd_at": {
        "key": "Madry2018Towards",
        "name": "Towards Deep Learning Models Resistant to Adversarial Attacks",
        "authors": "Aleksander Madry, Aleksandar Makelov, Ludwig Schmidt, Dimitris Tsipras, Adrian Vladu",
        "venue": "ICLR 2018",
        "link": "https://arxiv.org/abs/1706.06083",
    },
    "trades": {
        "key": "Zhang2019Theoretically",
        "name": "Theoretically Principled Trade-off between Robustness and Accuracy",
        "authors": "Hongyang Zhang, Yaodong Yu, Jiantao Jiao, Eric P. Xing, Laurent El Ghaoui, "
                   "Michael I. Jordan",
        "venue": "ICML 2019",
        "link": "https://arxiv.org/abs/1901.08573",
    },
}

# The S2AP plug-in states its paper on its score-step class.
S2AP_SOURCE = ("s2ap.py", "ScoreSharpness")


class PaperMetadataError(ValueError):
    """A ``paper`` attribute that is not a literal dict of the required strings."""


def _tree(path: Path) -> ast.Module:
    try:
        stamp = path.stat().st_mtime_ns
    except OSError as exc:
        raise PaperMetadataError(f"cannot read method file {path}: {exc}") from exc
    return _parsed(str(path), stamp)


@functools.lru_cache(maxsize=64)
def _parsed(path: str, stamp: int) -> ast.Module:
    # one parse per file version: a site looks up the paper of every result file
    try:
        return ast.parse(Path(path).read_text(), filename=path)
    except OSError as exc:
        raise PaperMetadataError(f"cannot read method file {path}: {exc}") from exc
    except SyntaxError as exc:
        raise PaperMetadataError(f"{path}:{exc.lineno}: does not parse: {exc.msg}") from exc


def _is_registration(deco: ast.expr, name: str | None) -> bool:
    if not isinstance(deco, ast.Call):
        return False
    func = getattr(deco.func, "id", getattr(deco.func, "attr", None))
    if func != "register_method" or not deco.args or not isinstance(deco.args[0], ast.Constant):
        return False
    return name is None or deco.args[0].value == name


def _paper_of_class(path: Path, node: ast.ClassDef) -> dict[str, str] | None:
    for stmt in node.body:
        if isinstance(stmt, ast.Assign):
            targets, value = [t.id for t in stmt.targets if isinstance(t, ast.Name)], stmt.value
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value:
            targets, value = [stmt.target.id], stmt.value
        else:
            continue
        if "paper" not in targets:
            continue
        try:
            paper = ast.literal_eval(value)
        except ValueError:
            raise PaperMetadataError(f"{path}:{stmt.lineno}: {node.name}.paper must be a literal "
                                     "dict (no names, calls or f-strings)") from None
        return validate_paper(paper, f"{path}:{stmt.lineno}: {node.name}.paper")
    return None


def validate_paper(paper: Any, where: str) -> dict[str, str]:
    if not isinstance(paper, dict):
        raise PaperMetadataError(f"{where} must be a dict with keys {', '.join(PAPER_FIELDS)}")
    missing = [k for k in PAPER_FIELDS if not isinstance(paper.get(k), str) or not paper[k].strip()]
    if missing:
        raise PaperMetadataError(f"{where} lacks non-empty string(s) {', '.join(missing)}; "
                                 f"required: {', '.join(PAPER_FIELDS)}")
    return {k: str(v) for k, v in paper.items()}


def class_paper(path: str | Path, class_name: str) -> dict[str, str] | None:
    """The ``paper`` literal of class ``class_name`` in ``path`` (None when it states none)."""
    path = Path(path)
    for node in _tree(path).body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            return _paper_of_class(path, node)
    return None


def _paper_keyword(path: Path, deco: ast.Call) -> dict[str, str] | None:
    kw = next((k for k in deco.keywords if k.arg == "paper"), None)
    if kw is None:
        return None
    try:
        paper = ast.literal_eval(kw.value)
    except ValueError:
        raise PaperMetadataError(f"{path}:{kw.value.lineno}: paper= must be a literal dict (no "
                                 "names, calls or f-strings)") from None
    return validate_paper(paper, f"{path}:{kw.value.lineno}: paper=")


def method_paper(method: str, method_files: Iterable[str | Path] = ()) -> dict[str, str] | None:
    """The paper of registered method ``method``: its registration's ``paper=`` (or, in an older
    method file, its class's ``paper`` literal), looked up in methods/*.py, then in the extra
    method files; None when the method is found but states no paper. Unknown method: KeyError."""
    files = sorted(METHODS_DIR.glob("*.py")) + [Path(f) for f in method_files]
    for path in files:
        for node in ast.walk(_tree(path)):
            if not isinstance(node, ast.ClassDef):
                continue
            deco = next((d for d in node.decorator_list if _is_registration(d, method)), None)
            if deco is not None:
                return _paper_keyword(path, deco) or _paper_of_class(path, node)
    raise KeyError(f"method {method!r} is not registered in {METHODS_DIR} or the method files given")


def s2ap_paper() -> dict[str, str] | None:
    return class_paper(METHODS_DIR / S2AP_SOURCE[0], S2AP_SOURCE[1])


def training_paper(loss: str | None) -> dict[str, str] | None:
    return TRAINING_PAPERS.get(str(loss or "pgd_at"))


__all__ = ["PAPER_FIELDS", "TRAINING_PAPERS", "PaperMetadataError", "validate_paper", "class_paper",
           "method_paper", "s2ap_paper", "training_paper"]
