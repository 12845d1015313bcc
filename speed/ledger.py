"""Where speed/bench_quick.py's time goes: CPU seconds and model passes per label (``Ledger``),
and the instrumentation that labels them (every top-level model forward counted; evaluation
phases, validation and each of pyautoattack's attacks under a label of their own)."""
from __future__ import annotations

import contextlib
import json
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from passes import PassCounter, cpu_time  # noqa: E402

from benchmark.training import stages  # noqa: E402


class Ledger:
    """CPU seconds and model passes per label; labels nest (the innermost one gets the passes)."""

    def __init__(self) -> None:
        self.counter = PassCounter()
        self.seconds: dict[str, float] = defaultdict(float)
        self.results: dict[str, dict] = {}
        self.stages: list[str] = []

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({
            "seconds": self.seconds, "results": self.results, "stages": self.stages,
            "counts": [[lab, kind, b, n] for (lab, kind, b), n in self.counter.counts.items()]}))

    @classmethod
    def load(cls, path: Path) -> Ledger:
        data = json.loads(path.read_text())
        ledger = cls()
        ledger.seconds.update(data["seconds"])
        ledger.results, ledger.stages = data["results"], data["stages"]
        for lab, kind, b, n in data["counts"]:
            ledger.counter.counts[(lab, kind, b)] = n
        return ledger

    @contextlib.contextmanager
    def stage(self, label: str):
        self.stages.append(label)
        with instrumented(self, label), self.section(label):
            yield

    @contextlib.contextmanager
    def section(self, label: str):
        t0 = cpu_time()
        with self.counter.labelled(label):
            try:
                yield
            finally:
                self.seconds[label] += cpu_time() - t0


@contextlib.contextmanager
def _patched(obj, name, wrapper):
    original = getattr(obj, name)
    setattr(obj, name, wrapper(original))
    try:
        yield
    finally:
        setattr(obj, name, original)


@contextlib.contextmanager
def instrumented(ledger: Ledger, prefix: str):
    """Every top-level model forward is counted (a global forward hook on benchmark.core.models.Normalized);
    evaluation phases and pyautoattack's attacks get labels of their own."""
    from pyautoattack import autopgd_base, fab_base, square

    from benchmark.core.models import Normalized
    from benchmark.evaluation import protocol as evaluation
    from benchmark.training import loop as training

    def hook(module, args, output):
        if isinstance(module, Normalized):
            ledger.counter._hook(module, args, output)

    def labelled(label_of):
        def wrap(fn):
            def inner(*args, **kwargs):
                with ledger.section(label_of(*args)):
                    return fn(*args, **kwargs)
            return inner
        return wrap

    def attack_label(name):
        return lambda self, *a: f"{prefix}/autoattack/{name(self)}"

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_patched(evaluation, "_clean_pass", labelled(lambda *a: f"{prefix}/clean")))
        stack.enter_context(_patched(evaluation, "_pgd", labelled(lambda *a: f"{prefix}/pgd")))
        stack.enter_context(_patched(evaluation, "run_autoattack",
                                     labelled(lambda *a: f"{prefix}/autoattack/other")))
        stack.enter_context(_patched(training, "validate", labelled(lambda *a: f"{prefix}/validate")))
        stack.enter_context(_patched(stages, "validate", labelled(lambda *a: f"{prefix}/validate")))
        stack.enter_context(_patched(
            autopgd_base.APGDAttack, "perturb",
            labelled(attack_label(lambda s: "apgd-ce" if s.loss == "ce" else "apgd-dlr"))))
        stack.enter_context(_patched(autopgd_base.APGDAttack_targeted, "perturb",
                                     labelled(attack_label(lambda s: "apgd-t"))))
        stack.enter_context(_patched(fab_base.FABAttack, "perturb",
                                     labelled(attack_label(lambda s: "fab-t" if s.targeted else "fab"))))
        stack.enter_context(_patched(square.SquareAttack, "perturb",
                                     labelled(attack_label(lambda s: "square"))))
        try:
            yield
        finally:
            handle.remove()
