"""What S2AP does to the mask: stability, score-space sharpness and the score-space Hessian.

Long because every measurement must restore the model bit for bit, and the restoring machinery is
shared by all of them.

All measurements run on a fixed batch with the model in EVAL mode (BatchNorm uses its running
statistics, dropout is off), so they are deterministic functions of (weights, scores, batch) and
comparable across runs. None of them changes the model: every call snapshots and restores the
masks, scores and buffers bit for bit, every module's train/eval flag, each masked layer's mode
and every parameter's ``requires_grad``, never touches ``.grad`` (gradients come from
``torch.autograd.grad``), and runs under ``torch.random.fork_rng`` so the caller's global RNG
state is unchanged. Randomness (random score directions, the Hessian's start vector) comes from
an explicit ``torch.Generator``.

Definitions (the README's S2AP section says what each number is for):

* mask of s: the layer's own rule at its own count (``layer.select_mask(s_l)``: top-k at
  ``kept_target``, with its one-per-row floor when it has one), so a perturbation can only
  move weights across the top-k boundary, never change k.
* flip fraction between two masks (``mask_agreement``): sum over layers of flips / sum over layers
  of (kept_a + kept_b);
  with equal kept counts this is flips / (2 * kept) = the fraction of kept weights that changed
  (identical masks 0, disjoint masks of equal size 1). Channel masks count every weight of a
  flipped channel, so structured and unstructured runs share one unit (weights).
* random z: per layer, a Gaussian direction d_l mapped by ``score_perturbation.perturbation(s_l,
  d_l, r, norm)`` (the formula S2AP's score step uses); for the l2 norm that is d_l rescaled to
  ||z_l|| = r * ||s_l||. The same n_random directions serve every radius (common random
  numbers), so the curve over radii is smooth.
* worst-case z: one normalised gradient step, ``perturbation(s_l, g_l, r, norm)`` with g the
  score gradient (straight-through) of the cross-entropy on the adversarial batch: S2AP's own
  inner maximisation, measured instead of trained on.
* sharpness: L(M(s + z*)) - L(M(s)) with z* the worst-case z. The masked loss is piecewise
  constant in s, so the sharpness is exactly 0 until z* flips a weight; it is the loss cost of
  the flips counted by the worst-case stability at the same radius. ``first_order`` (g . z*) is
  the straight-through estimate of the same quantity and is never negative for the l2 norm.
* Hessian: see ``hessian_top_eigenvalue``.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmark.core.masking import masked_layers, scores_frozen
from benchmark.evaluation.attacks import AttackConfig, pgd_linf
from benchmark.training.score_perturbation import perturbation

DEFAULT_RADII = (0.01, 0.02, 0.05, 0.1)

# cfg of ``search_diagnostics``. seed_stability belongs to the workflow (two search runs, compared
# by ``stages.seed_stability``); it is accepted here so the preset's diagnostics block can be
# passed through unchanged.
DEFAULTS = {
    "radii": list(DEFAULT_RADII),
    "n_random": 5,
    "hessian_iters": 20,
    "hessian_tol": 1e-3,
    # 0.05: one of the default radii, so sharpness_r0.05 is the loss cost of exactly the flips
    # that stability_worst_r0.05 counts; and above S2AP's training gamma (0.01 by default), so it
    # probes the neighbourhood just beyond the one S2AP flattened, where plain and S2AP masks
    # differ most
    "sharpness_radius": 0.05,
    "batch_size": 128,
    "norm": "l2",
    "seed_stability": False,
}


# ---------------------------------------------------------------- mask comparisons
def _as_dict(m) -> dict:
    return m if isinstance(m, dict) else {"": m}


def _paired(mask_a, mask_b) -> Iterable[tuple[str, torch.Tensor, torch.Tensor]]:
    a, b = _as_dict(mask_a), _as_dict(mask_b)
    if set(a) != set(b):
        raise KeyError(f"masks cover different layers: only in a {sorted(set(a) - set(b))}, "
                       f"only in b {sorted(set(b) - set(a))}")
    for name in a:
        ta, tb = torch.as_tensor(a[name]).bool(), torch.as_tensor(b[name]).bool()
        if ta.shape != tb.shape:
            raise ValueError(f"layer {name!r}: mask shapes differ, {tuple(ta.shape)} vs {tuple(tb.shape)}")
        yield name, ta, tb.to(ta.device)


def mask_agreement(masks_a, masks_b) -> dict:
    """Agreement of two masks (two search seeds on one dense model, say), global and per layer.

    ``masks_a`` and ``masks_b`` are dicts layer name -> boolean (or 0/1) tensor, or two tensors.
    flip_fraction = flips / (kept_a + kept_b) summed over layers, i.e. flips / (2 * kept) for equal
    kept counts (two empty masks: 0); jaccard = |a & b| / |a | b| (two empty masks: 1).
    """
    layers = {}
    flips = kept = inter = union = 0
    for name, a, b in _paired(masks_a, masks_b):
        f, k = int((a ^ b).sum()), int(a.sum()) + int(b.sum())
        i, u = int((a & b).sum()), int((a | b).sum())
        layers[name] = {"flip_fraction": f / k if k else 0.0, "jaccard": i / u if u else 1.0}
        flips, kept, inter, union = flips + f, kept + k, inter + i, union + u
    return {"flip_fraction": flips / kept if kept else 0.0,
            "jaccard": inter / union if union else 1.0, "layers": layers}


# ---------------------------------------------------------------- restoring the model
def _cuda_devices(model: nn.Module) -> list:
    return sorted({t.device.index or 0 for t in list(model.parameters()) + list(model.buffers())
                   if t.device.type == "cuda"})


@contextlib.contextmanager
def _diagnostic_state(model: nn.Module):
    """Model in eval mode, masked layers in search mode with straight-through scores, only the
    scores requiring grad; everything restored exactly on exit. Yields the masked layers."""
    layers = [layer for _, layer in masked_layers(model)]
    training = [(m, m.training) for m in model.modules()]
    layer_state = [(layer, layer.mode, layer.score_grad) for layer in layers]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    # masks are buffers; scores are saved too because a bug (or a hook) must not leak into the run
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    scores = [(layer.scores, layer.scores.detach().clone()) for layer in layers]
    with torch.random.fork_rng(devices=_cuda_devices(model)):
        try:
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
            for layer in layers:
                layer.mode = "search"
                layer.score_grad = True
                layer.scores.requires_grad_(True)
            # every measurement (the attack included) is of M(s); after refresh_masks this is the
            # stored mask already
            _load(layers, _base_masks(layers))
            yield layers
        finally:
            with torch.no_grad():
                for t, saved in buffers + scores:
                    # untouched tensors keep their autograd version counter (a caller's pending graph)
                    if not torch.equal(t, saved):
                        t.copy_(saved)
            for p, flag in flags:
                p.requires_grad_(flag)
            for layer, mode, score_grad in layer_state:
                layer.mode, layer.score_grad = mode, score_grad
            for m, flag in training:
                m.training = flag


def _base_masks(layers) -> list[torch.Tensor]:
    return [l.select_mask(l.scores) for l in layers]


@torch.no_grad()
def _load(layers, masks) -> None:
    for layer, m in zip(layers, masks):
        layer.mask.copy_(m)


def _perturbed_masks(layers, zs) -> list[torch.Tensor]:
    return [l.select_mask(l.scores.detach() + z) for l, z in zip(layers, zs)]


def _flip_fraction(layers, base, other) -> float:
    """Flip fraction in weight units (a channel mask entry counts for its whole filter)."""
    flips = kept = 0
    for layer, a, b in zip(layers, base, other):
        unit = layer.weight.numel() // layer.scores.numel()
        flips += unit * int((a != b).sum())
        kept += unit * (int(a.sum()) + int(b.sum()))
    return flips / kept if kept else 0.0


def _loss(model, x, y) -> torch.Tensor:
    return F.cross_entropy(model(x).float(), y)


def _score_grads(model, layers, x, y) -> tuple[float, list]:
    with torch.enable_grad():
        loss = _loss(model, x, y)
        grads = torch.autograd.grad(loss, [l.scores for l in layers], allow_unused=True)
    return float(loss.detach()), list(grads)


def _worst_z(layers, grads, radius, norm) -> list[torch.Tensor]:
    return [perturbation(l.scores.detach(), g, radius, norm) for l, g in zip(layers, grads)]


def _adversarial(model, x, y, attack: AttackConfig | None) -> torch.Tensor:
    if attack is None or attack.steps == 0 or attack.eps == 0:
        return x
    was = model.training
    model.eval()
    try:
        with scores_frozen(model):
            return pgd_linf(model, x, y, attack)
    finally:
        model.train(was)


def _std(values: Sequence[float]) -> float:
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _generator(generator: torch.Generator | None) -> torch.Generator:
    return generator if generator is not None else torch.Generator().manual_seed(0)


# ---------------------------------------------------------------- measurements
def _stability(model, layers, x, y, radii, n_random, generator, norm, grads=None) -> dict:
    base = _base_masks(layers)
    # drawn on the CPU generator and moved, so a run gives the same z on CPU and GPU
    directions = [[torch.randn(l.scores.shape, generator=generator, dtype=l.scores.dtype).to(l.scores.device)
                   for l in layers] for _ in range(n_random)]
    if grads is None:
        _load(layers, base)
        _, grads = _score_grads(model, layers, x, y)
    out = {}
    for r in radii:
        r = float(r)
        rand = [_flip_fraction(layers, base, _perturbed_masks(
                    layers, [perturbation(l.scores.detach(), d, r, norm) for l, d in zip(layers, ds)]))
                for ds in directions]
        worst = _flip_fraction(layers, base, _perturbed_masks(layers, _worst_z(layers, grads, r, norm)))
        out[r] = {"random": sum(rand) / len(rand) if rand else float("nan"), "random_std": _std(rand),
                  "worst": worst}
    return out


def mask_stability(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                   radii: Sequence[float] = DEFAULT_RADII, n_random: int = 5,
                   generator: torch.Generator | None = None, norm: str = "l2",
                   attack: AttackConfig | None = None) -> dict:
    """Flip fraction between M(s) and M(s + z) for random and worst-case z at each radius.

    Returns {radius: {"random": mean over n_random draws, "random_std": sample std,
    "worst": worst-case flip fraction}}. ``x`` should already be adversarial (a fixed validation
    batch); with ``attack`` given, PGD-CE is run on it first (eval mode, scores frozen, drawing
    its random start from the forked RNG). ``generator`` (default: seeded 0) draws the random
    directions. The model is left exactly as it was (module docstring).
    """
    if not [1 for _ in masked_layers(model)]:
        raise ValueError("mask_stability: the model has no masked layers")
    gen = _generator(generator)
    with _diagnostic_state(model) as layers:
        x = _adversarial(model, x, y, attack)
        return _stability(model, layers, x, y, radii, n_random, gen, norm)


def _sharpness(model, layers, x, y, radius, norm, grads=None, loss=None) -> dict:
    base = _base_masks(layers)
    _load(layers, base)
    if grads is None:
        loss, grads = _score_grads(model, layers, x, y)
    zs = _worst_z(layers, grads, radius, norm)
    first_order = float(sum((g * z).sum() for g, z in zip(grads, zs) if g is not None))
    _load(layers, _perturbed_masks(layers, zs))
    with torch.no_grad():
        loss_p = float(_loss(model, x, y))
    _load(layers, base)
    return {"loss": loss, "loss_perturbed": loss_p, "sharpness": loss_p - loss,
            "first_order": first_order, "flip_fraction": _flip_fraction(layers, base, _perturbed_masks(layers, zs))}


def score_sharpness(model: nn.Module, x: torch.Tensor, y: torch.Tensor, radius: float,
                    norm: str = "l2", *, attack: AttackConfig | None = None) -> dict:
    """Loss increase under the worst-case score perturbation of relative radius ``radius``.

    Returns {"loss": L(M(s)), "loss_perturbed": L(M(s + z*)), "sharpness": the difference,
    "first_order": g . z* (the straight-through prediction), "flip_fraction": flips of z*}.
    Cross-entropy on ``x`` (adversarial already, or attacked here with ``attack``), eval mode.
    """
    if not [1 for _ in masked_layers(model)]:
        raise ValueError("score_sharpness: the model has no masked layers")
    with _diagnostic_state(model) as layers:
        x = _adversarial(model, x, y, attack)
        return _sharpness(model, layers, x, y, float(radius), norm)


def _hessian_power(model, layers, x, y, iters, tol, generator) -> tuple[float, int]:
    _load(layers, _base_masks(layers))
    params = [l.scores for l in layers]
    with torch.enable_grad():
        grads = torch.autograd.grad(_loss(model, x, y), params, create_graph=True, allow_unused=True)
    # a layer the loss does not reach, or one where the gradient is constant in s, has a zero
    # block; double backward must skip it rather than fail
    live = [(p, g) for p, g in zip(params, grads) if g is not None and g.requires_grad]
    if not live or iters <= 0:
        return 0.0, 0
    ps, gs = [p for p, _ in live], [g for _, g in live]
    v = [torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device) for p in ps]
    norm = torch.sqrt(sum((t * t).sum() for t in v))
    v = [t / norm for t in v]
    eig, prev, done = 0.0, None, 0
    for it in range(iters):
        with torch.enable_grad():
            hv = torch.autograd.grad(gs, ps, grad_outputs=v, retain_graph=True, allow_unused=True)
        hv = [torch.zeros_like(p) if h is None else h.detach() for p, h in zip(ps, hv)]
        eig = float(sum((h * t).sum() for h, t in zip(hv, v)))  # Rayleigh quotient, ||v|| = 1
        done = it + 1
        norm = float(torch.sqrt(sum((h * h).sum() for h in hv)))
        if norm == 0.0 or not math.isfinite(norm):
            break
        v = [h / norm for h in hv]
        if prev is not None and abs(eig - prev) <= tol * (abs(prev) + 1e-12):
            break
        prev = eig
    return eig, done


def hessian_top_eigenvalue(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, iters: int = 20,
                           tol: float = 1e-3, generator: torch.Generator | None = None,
                           attack: AttackConfig | None = None) -> float:
    """Top eigenvalue (largest in magnitude, signed) of the score-space Hessian, by power iteration.

    What Hessian: the masked loss L(w * M(s)) is piecewise constant in s, so its true Hessian is
    zero almost everywhere. The suite's straight-through estimator differentiates the surrogate
    L(W(s)) with W(s) = w * (m + |s| - sg(|s|)) (sg = stop-gradient): value w * m, Jacobian
    D = dW/ds = diag(w * sign(s)) (for channel masks, the map that spreads s_c over filter c with
    weights w[c]). Since d2W/ds2 = 0 almost everywhere,

        H_s = D^T H_W D,   H_W = the Hessian of L in the effective weights at w * m,

    taken over ALL positions (pruned weights included: their effective value is 0 but their
    score still moves them), i.e. the curvature the straight-through gradient field that the
    mask search follows sees. It is computed by Hessian-vector products, double backward of
    autograd.grad(grad . v, scores), each about three forward/backward passes. Stops after
    ``iters`` products or when the estimate changes by less than ``tol`` (relative). Eval mode,
    fixed batch, model restored exactly; ``generator`` draws the start vector.
    """
    if not [1 for _ in masked_layers(model)]:
        raise ValueError("hessian_top_eigenvalue: the model has no masked layers")
    gen = _generator(generator)
    with _diagnostic_state(model) as layers:
        x = _adversarial(model, x, y, attack)
        return _hessian_power(model, layers, x, y, iters, tol, gen)[0]


# ---------------------------------------------------------------- the prune stage's call
def _fixed_batch(val_set, n: int, device) -> tuple[torch.Tensor, torch.Tensor] | None:
    if n <= 0 or len(val_set) == 0:
        return None
    # own generator: a DataLoader iterator otherwise draws its base seed from the global RNG
    loader = torch.utils.data.DataLoader(val_set, batch_size=min(n, len(val_set)), shuffle=False,
                                         generator=torch.Generator().manual_seed(0))
    x, y = next(iter(loader))
    return x.to(device), y.to(device)


def _key(r: float) -> str:
    return f"r{float(r):g}"


def search_diagnostics(model: nn.Module, val_set, cfg: dict | None, attack: AttackConfig | None,
                       device, seed: int) -> dict:
    """Every score-space diagnostic of a searched mask, as one flat JSON-able dict.

    The batch is the first ``batch_size`` images of ``val_set`` (no shuffle), attacked once with
    PGD-CE (``attack``; None or 0 steps: clean) in eval mode with the RNG forked and seeded by
    ``seed``; the same adversarial batch serves every measurement, and one score gradient serves
    the worst-case z of every radius and the sharpness. Keys (radius r printed with %g):
      stability_random_r<r>, stability_random_std_r<r>, stability_worst_r<r>  for r in radii,
      sharpness_r<sharpness_radius>, sharpness_first_order_r<sharpness_radius>,
      diag_loss (robust CE at M(s) on the batch), hessian_top_eig (absent when hessian_iters is 0),
      diag_batch (the batch size used).
    A model without masked layers (the dense baseline) or an empty val_set gives {}.
    """
    cfg = {**DEFAULTS, **(cfg or {})}
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown diagnostics options {sorted(unknown)}; valid: {sorted(DEFAULTS)}")
    if not [1 for _ in masked_layers(model)]:
        return {}
    device = torch.device(device) if device is not None else next(model.parameters()).device
    gen = torch.Generator().manual_seed(int(seed))
    radii = [float(r) for r in cfg["radii"]]
    r_sharp = float(cfg["sharpness_radius"])
    out: dict = {}
    with _diagnostic_state(model) as layers:
        # inside the fork: a dataset transform that draws random numbers leaves the caller's RNG alone
        batch = _fixed_batch(val_set, int(cfg["batch_size"]), device)
        if batch is None:
            return {}
        x, y = batch
        torch.manual_seed(int(seed))  # PGD's random start; the fork keeps it from the caller's RNG
        x = _adversarial(model, x, y, attack)
        loss, grads = _score_grads(model, layers, x, y)
        stab = _stability(model, layers, x, y, radii, int(cfg["n_random"]), gen, cfg["norm"], grads=grads)
        for r, v in stab.items():
            out[f"stability_random_{_key(r)}"] = v["random"]
            out[f"stability_random_std_{_key(r)}"] = v["random_std"]
            out[f"stability_worst_{_key(r)}"] = v["worst"]
        sharp = _sharpness(model, layers, x, y, r_sharp, cfg["norm"], grads=grads, loss=loss)
        out[f"sharpness_{_key(r_sharp)}"] = sharp["sharpness"]
        out[f"sharpness_first_order_{_key(r_sharp)}"] = sharp["first_order"]
        out["diag_loss"] = loss
        if int(cfg["hessian_iters"]) > 0:
            out["hessian_top_eig"] = _hessian_power(model, layers, x, y, int(cfg["hessian_iters"]),
                                                    float(cfg["hessian_tol"]), gen)[0]
    out["diag_batch"] = int(len(y))
    return out
