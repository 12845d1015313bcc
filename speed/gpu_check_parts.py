"""The measurements of speed/gpu_check.py, one method per part (its docstring lists the parts):
step times, our HYDRA epoch against the public-style one, AutoAttack ours against bare, and the
evaluation's costs. ``Parts`` is mixed into gpu_check's ``Check``, which holds the state they
fill (steps, evals, the AutoAttack runs) and decides which parts fit the budget."""
from __future__ import annotations

import math
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_check_support import spread  # noqa: E402
from public_style_hydra import PublicStyleHydra, to_public_style  # noqa: E402
from trainers import STEP_KEYS as VARIANTS  # noqa: E402
from trainers import margin_data, random_data, stage_training  # noqa: E402


def train_cfg(info, m, loss: str = "pgd_at", epochs: int = 20, lr: float = 0.1):
    """The trainers' config at the matrix's batch and attack steps."""
    from trainers import train_config

    return train_config(info, batch=m.batch, attack_steps=m.attack_steps, loss=loss, epochs=epochs,
                        lr=lr)


def search_model(method_name: str, arch: str, width: float, info, m, cfg, run, device=None):
    """As the prune stage builds it (speed/trainers.py), at the matrix's sparsity."""
    import trainers

    return trainers.search_model(method_name, arch, width, info, m.sparsity, cfg, run)


def make_trainer(variant: str, arch: str, width: float, precision: str, info, m, data, device):
    """One variant's Trainer (speed/trainers.py) at the matrix's sizes."""
    import trainers

    return trainers.make_trainer(variant, arch, info, train_cfg(info, m), data, device, width=width,
                                 sparsity=m.sparsity, precision=precision)


class Parts:
    # -- part 1: step times -------------------------------------------------------------------
    def part_steps(self, arch: str, precision: str) -> dict:
        from torch.utils.data import TensorDataset

        from benchmark.core.registry import method_registry

        m, say = self.m, self.say
        width = m.widths[arch]
        x, y = random_data(m.batch, self.info, 0)
        if self.device.type == "cuda":  # what the stages' loader hands over
            x, y = x.pin_memory(), y.pin_memory()
        data = TensorDataset(x, y)
        registered = set(method_registry().names())
        variants = [v for v in VARIANTS if v in ("dense", "finetune", "finetune+awp")
                    or v.split("+")[0] in registered]
        trainers = {v: make_trainer(v, arch, width, precision, self.info, m, data, self.device)
                    for v in variants}
        say(f"  {arch} width {width}, batch {m.batch}, PGD-{m.attack_steps}, {precision}"
            f"{' + channels_last' if precision == 'bf16' else ''}, sparsity {m.sparsity}; "
            f"{m.warmup} warm-up steps, {m.rounds} rounds x {m.reps} steps")
        for _ in range(m.warmup):  # allocator, cuDNN plans, first-call overheads
            for v in variants:
                trainers[v].train_step(x, y)
        times: dict[str, list[float]] = {v: [] for v in variants}
        for r in range(m.rounds):
            order = variants[r % len(variants):] + variants[:r % len(variants)]
            for v in order:
                for _ in range(m.reps):
                    t, loss = self.timer(lambda tr=trainers[v]: tr.train_step(x, y))
                    if not math.isfinite(loss):
                        raise FloatingPointError(f"{v}: loss {loss}")
                    times[v].append(t)
        out = {"arch": arch, "width": width, "precision": precision, "batch": m.batch,
               "attack_steps": m.attack_steps, "loss": "pgd_at", "variants": {}, "ratios": {}}
        for v in variants:
            out["variants"][v] = spread(times[v])
            s = out["variants"][v]
            say(f"  {v:13s} median {s['median_s'] * 1e3:8.1f} ms   min {s['min_s'] * 1e3:8.1f}   "
                f"max {s['max_s'] * 1e3:8.1f}")
        for a, b in (("hydra", "dense"), ("hydra+s2ap", "hydra"), ("harp", "hydra"),
                     ("finetune", "dense"), ("finetune+awp", "finetune")):
            if a in times and b in times:
                per = [ta / tb for ta, tb in zip(times[a], times[b])]
                ratio = out["variants"][a]["median_s"] / out["variants"][b]["median_s"]
                out["ratios"][f"{a}/{b}"] = {"median_ratio": ratio, "per_pair_median": statistics.median(per),
                                             "per_pair_min": min(per), "per_pair_max": max(per)}
                say(f"  {a} / {b}: {ratio:.3f} (per-pair median {statistics.median(per):.3f}, "
                    f"range {min(per):.3f}-{max(per):.3f})")
        self.steps[(arch, precision)] = out
        if arch == "resnet18" and precision == self.lowp:
            self.unit = out["variants"]["dense"]["median_s"]
            self.goal(0, out["ratios"].get("hydra/dense", {}).get("median_ratio"))
            self.goal(1, out["ratios"].get("hydra+s2ap/hydra", {}).get("median_ratio"))
        return out

    # -- part 2: our HYDRA epoch against the public-style step ----------------------------------
    def part_epoch(self, arch: str, precision: str) -> dict:
        import torch
        from torch.utils.data import TensorDataset

        from benchmark.core.models import build_model

        m, say = self.m, self.say
        width = m.widths[arch]
        cfg = train_cfg(self.info, m, loss="trades", epochs=1)
        x, y = random_data(m.epoch_steps * m.batch, self.info, 1)
        data = TensorDataset(x, y)
        warm = TensorDataset(x[:2 * m.batch], y[:2 * m.batch])
        run = stage_training("prune", cfg, data, self.device, precision)
        ours, method = search_model("hydra", arch, width, self.info, m, cfg, run, self.device)
        torch.manual_seed(0)
        ref_model = to_public_style(build_model(arch, self.info, width=width), 1.0 - m.sparsity).to(self.device)
        ref = PublicStyleHydra(ref_model, cfg, self.device, bf16=run.bf16, channels_last=run.channels_last)

        def our_epoch(dataset):
            tr = stage_training("prune", cfg, dataset, self.device, precision).trainer(
                ours, method.search_params(ours, cfg), method.search_hooks(ours, cfg))
            tr.fit()

        say(f"  {arch} width {width}, TRADES PGD-{m.attack_steps}, {precision}; an 'epoch' is "
            f"{m.epoch_steps} steps of {m.batch} synthetic CIFAR-shaped images from CPU memory "
            f"through the suite's loader (Trainer.fit; the reference walks the same loader order); "
            f"{m.epoch_rounds} interleaved rounds after a 2-step warm-up of each")
        our_epoch(warm)
        ref.epoch(warm, 0)
        times: dict[str, list[float]] = {"ours": [], "public_style": []}
        for r in range(m.epoch_rounds):
            order = ("ours", "public_style") if r % 2 == 0 else ("public_style", "ours")
            for who in order:
                fn = (lambda: our_epoch(data)) if who == "ours" else (lambda: ref.epoch(data, 0))
                t, _ = self.timer(fn)
                times[who].append(t)
            say(f"  round {r + 1}: ours {times['ours'][-1]:.2f} s, public-style {times['public_style'][-1]:.2f} s "
                f"(first: {order[0]})")
        out = {"arch": arch, "width": width, "precision": precision, "loss": "trades",
               "steps_per_epoch": m.epoch_steps, "batch": m.batch,
               "ours": spread(times["ours"]), "public_style": spread(times["public_style"])}
        ratio = out["ours"]["median_s"] / out["public_style"]["median_s"]
        out["ratio"] = ratio
        ours_s = out['ours']['median_s']
        say(f"  our epoch median {ours_s:.2f} s ({ours_s / m.epoch_steps * 1e3:.1f} ms/step), "
            f"public-style {out['public_style']['median_s']:.2f} s "
            f"({out['public_style']['median_s'] / m.epoch_steps * 1e3:.1f} ms/step); ratio {ratio:.3f}")
        self.goal(2, ratio)
        return out

    # -- part 3 and 6: AutoAttack, ours against bare --------------------------------------------
    def quick_trained(self, arch: str, steps: int):
        """A model trained for ``steps`` PGD-AT steps on margin_data (the pretrain stage's trainer),
        then rebuilt plain and made ready for evaluation as the evaluate stage does."""
        import torch
        from torch.utils.data import TensorDataset

        from benchmark.core.models import build_model
        from benchmark.evaluation.protocol import prepare_for_eval

        m = self.m
        width = m.widths[arch]
        cfg = train_cfg(self.info, m, loss="pgd_at", epochs=1, lr=0.05)
        cfg.schedule = "constant"
        x, y = margin_data(max(steps, 1) * m.batch, self.info, 2)
        run = stage_training("pretrain", cfg, TensorDataset(x, y), self.device, self.lowp)
        torch.manual_seed(0)
        model = run.layout(build_model(arch, self.info, width=width).to(self.device))
        if steps > 0:
            run.trainer(model, list(model.parameters())).fit()
        plain = build_model(arch, self.info, width=width)
        plain.load_state_dict({k: v.detach().cpu() for k, v in model.state_dict().items()})
        return prepare_for_eval(plain.to(self.device))

    def aa_bare(self, model, x, y):
        from pyautoattack import AutoAttack

        adversary = AutoAttack(model, norm="Linf", eps=self.info.eps, seed=0, version="standard",
                               device=str(self.device))
        _, y_adv = adversary.run_standard_evaluation(x, y, batch_size=self.m.aa_batch)
        return (y_adv.detach().cpu() == y.cpu())

    def aa_ours(self, model, x, y, n_shard: int | None = None):
        from benchmark.evaluation.autoattack import run_autoattack

        state = Path(tempfile.mkdtemp(prefix="gpu_check_aa_"))  # not in --out: $OUT brings back 8 files
        try:  # a fresh state folder: an earlier run's shard files would be resumed, not attacked
            return run_autoattack(model, x, y, eps=self.info.eps, version="standard", attacks=None,
                                  seed=0, batch_size=self.m.aa_batch,
                                  shard_size=n_shard or self.m.aa_batch, state_dir=state,
                                  device=self.device, progress=True)
        finally:
            shutil.rmtree(state, ignore_errors=True)

    def part_autoattack(self) -> dict:
        m, say = self.m, self.say
        t_train, model = self.timer(lambda: self.quick_trained("resnet18", m.aa_train_steps))
        x, y = margin_data(m.aa_images, self.info, 3)
        self.aa_model = (model, x, y)
        say(f"  model: ResNet18 width {m.widths['resnet18']} trained {m.aa_train_steps} PGD-AT steps "
            f"({t_train:.1f} s) on synthetic images (half a class pattern far above eps, half below); "
            f"AutoAttack standard, eps {self.info.eps:.4f}, {m.aa_images} images, batch {m.aa_batch}, "
            f"seed 0; ours: one shard with a state folder, as the evaluate stage runs it")
        self.aa_warmup(model, x, y)
        out = self.aa_round(model, x, y, ("bare", "ours"))
        out["train_steps"] = m.aa_train_steps
        return out

    def part_autoattack2(self) -> dict:
        if self.aa_model is None:
            raise RuntimeError("part autoattack:resnet18 did not run")
        return self.aa_round(*self.aa_model, ("ours", "bare"))

    def aa_warmup(self, model, x, y) -> None:
        from pyautoattack import AutoAttack

        # the kernels of the attack's batch shapes, outside the timed runs
        adversary = AutoAttack(model, norm="Linf", eps=self.info.eps, seed=0, version="standard",
                               device=str(self.device))
        adversary.attacks_to_run = ["apgd-ce"]
        adversary.apgd.n_iter = 2
        adversary.run_standard_evaluation(x, y, batch_size=self.m.aa_batch)

    def aa_round(self, model, x, y, order) -> dict:
        say = self.say
        flags, summary = {}, None
        for i, who in enumerate(order):
            if i == 1 and self.aa_runs[order[0]][-1] * 1.1 > self.budget.left():
                self.say(f"  {who}: SKIPPED ({self.aa_runs[order[0]][-1]:.0f} s for the first run, "
                         f"{self.budget.left():.0f} s of the budget left)")
                self.aa_runs[order[0]].pop()
                return {"order": list(order), "skipped": who}
            if who == "bare":
                t, flags["bare"] = self.timer(lambda: self.aa_bare(model, x, y))
            else:
                t, summary = self.timer(lambda: self.aa_ours(model, x, y))
                flags["ours"] = summary["flags"]
            self.aa_runs[who].append(t)
            say(f"  {who}: {t:.2f} s")
        same = bool(flags["ours"].equal(flags["bare"]))
        overhead = summary["seconds"] - summary["attack_seconds"]
        n = summary["n"]
        say(f"  identical per-image flags: {same}; AutoAttack accuracy {summary['acc']:.3f} "
            f"(clean {summary['clean_acc']:.3f}; after " +
            ", ".join(f"{a} {v:.3f}" for a, v in summary["robust_after"].items()) + ")")
        say(f"  our time outside pyautoattack's run_standard_evaluation: {overhead * 1e3:.1f} ms "
            f"({100 * overhead / max(summary['attack_seconds'], 1e-9):.2f} % of the attack)")
        ratio = statistics.median(self.aa_runs["ours"]) / statistics.median(self.aa_runs["bare"])
        say(f"  ours / bare (medians of {len(self.aa_runs['ours'])} run(s) each): {ratio:.4f}")
        if not same:
            raise RuntimeError("our AutoAttack flags differ from the bare call's")
        self.evals.setdefault("resnet18", {})["autoattack_image"] = statistics.median(self.aa_runs["ours"]) / n
        self.goal(3, ratio)
        return {"order": list(order), "bare": spread(self.aa_runs["bare"]), "ours": spread(self.aa_runs["ours"]),
                "ratio": ratio, "identical_flags": same, "overhead_s": overhead, "n": n,
                "acc": summary["acc"], "clean_acc": summary["clean_acc"],
                "robust_after": summary["robust_after"], "perturbed": summary["perturbed"]}

    # -- part 4 and 8: evaluation costs ----------------------------------------------------------
    def part_eval(self, arch: str, aa: bool = False) -> dict:
        import torch

        from benchmark.evaluation.protocol import clean_flags, pgd_flags

        m, say = self.m, self.say
        model = (self.aa_model[0] if arch == "resnet18" and self.aa_model is not None
                 else self.quick_trained(arch, m.aa_train_steps if aa else 0))
        x, y = margin_data(m.eval_images, self.info, 4)
        every = torch.ones(m.eval_images, dtype=torch.bool)
        pgd_flags(model, (x[:m.eval_batch], y[:m.eval_batch]), self.info.eps, steps=1,
                  batch_size=m.eval_batch, clean=every[:m.eval_batch])  # warm-up
        t_clean, _ = self.timer(lambda: clean_flags(model, (x, y), batch_size=m.eval_batch))
        t_pgd, _ = self.timer(lambda: pgd_flags(model, (x, y), self.info.eps, steps=m.pgd_steps,
                                                batch_size=m.eval_batch, clean=every))
        ev = self.evals.setdefault(arch, {})
        ev.update({"clean_image": t_clean / m.eval_images, "pgd_image": t_pgd / m.eval_images})
        say(f"  {arch}: clean {t_clean:.3f} s, PGD-{m.pgd_steps} {t_pgd:.2f} s on {m.eval_images} "
            f"images (batch {m.eval_batch}, every image attacked): {ev['clean_image'] * 1e3:.3f} and "
            f"{ev['pgd_image'] * 1e3:.2f} ms per image")
        out = {"arch": arch, "images": m.eval_images, "batch": m.eval_batch, "pgd_steps": m.pgd_steps,
               "clean_s": t_clean, "pgd_s": t_pgd}
        if aa:
            n = m.aa_images_extra
            xa, ya = margin_data(n, self.info, 3)
            self.aa_warmup(model, xa, ya)
            t, summary = self.timer(lambda: self.aa_ours(model, xa, ya, n_shard=n))
            ev["autoattack_image"] = t / n
            out["autoattack"] = {"n": n, "seconds": t, "acc": summary["acc"], "clean_acc": summary["clean_acc"],
                                 "robust_after": summary["robust_after"], "train_steps": m.aa_train_steps}
            say(f"  {arch}: AutoAttack standard (ours) {t:.2f} s on {n} images, "
                f"{ev['autoattack_image'] * 1e3:.1f} ms per image; accuracy {summary['acc']:.3f} "
                f"(clean {summary['clean_acc']:.3f})")
        return out

