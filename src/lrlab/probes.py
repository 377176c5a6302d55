"""Per-epoch measurements of what training is doing inside the net (the evidence for verdicts).

Every probe is an `engine.EpochHook`: it gets an `EpochContext` (the active members' weights,
the weights at the previous record, the lr of the last step and a fixed probe batch, of which
the probes use PROBE_SAMPLES) and returns `{metric name: Tensor[K_active]}`. Probes run once
per epoch on that batch, never per step, are batched over members (no Python loop over
members) and never modify the weights.

Metric names (l = 1..L numbers the weight layers; layer L is the output layer, layer l < L is
the l-th hidden layer):

- `grad_norm_l{l}`: Frobenius norm of dLoss/dW_l on the probe batch; `grad_norm`: the global
  norm over all parameters (weights and biases).
- `update_ratio_l{l}`: ||W_l - W_l(previous record)|| / ||W_l(previous record)||, how far the
  last epoch moved the layer relative to its size (absent at epoch 0).
- `weight_norm_l{l}`: ||W_l|| (Frobenius).
- `dead_frac_l{l}` (relu/leaky_relu hidden layers): share of the layer's units whose
  pre-activation is <= 0 for every probe sample (a dead ReLU passes no gradient to its
  weights, so nothing revives it); `dead_frac`: over all hidden units.
- `sat_frac_l{l}` (sigmoid/tanh hidden layers, and the output layer L when the output is
  sigmoid or quadratic): share of the layer's (unit, sample) pre-activations with
  abs(z) > SAT_THRESHOLD; `sat_frac`: over all those layers.
- `top_class_share`: share of the probe batch predicted as the most-predicted class (1.0: the
  net answers one class whatever the input); `majority_share`: share of the most frequent true
  class in the probe batch (the accuracy of always answering that class).
- `output_spread`: std over the probe batch of the output pre-activations, mean over output
  units: how much the output depends on the input at all.
- `sharpness`: top eigenvalue of the Hessian of the probe-batch training loss w.r.t. all
  parameters (power iteration on Hessian-vector products) at `sharpness_epochs`, absent
  (None) at the other epochs.
- `precond_sharpness` (Adam, AdamW, RMSprop, Adagrad, from the first step on): top eigenvalue
  of P^-1/2 H P^-1/2, with P the optimizer's diagonal preconditioner at that moment (see
  `preconditioner`), at the same epochs.

The stability line is drawn at report time from `verdicts.edge_of`: gradient descent on a
quadratic with curvature `sharpness` is unstable when lr > 2 / sharpness, heavy-ball momentum
m when lr > (2 + 2m) / sharpness, Adam when lr > (2 + 2 beta1) / ((1 - beta1)
precond_sharpness), RMSprop and Adagrad when lr > 2 / precond_sharpness.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lrlab import nets
from lrlab.engine import EpochContext, EpochHook
from lrlab.spec import Spec, members

Tensor = torch.Tensor

DEAD_ACTIVATIONS = ("relu", "leaky_relu")
"""Hidden activations whose units can die: relu (gradient exactly 0 for z <= 0) and
leaky_relu (gradient 0.01 there, so a 'dead' leaky unit learns 100x slower, not never)."""

SAT_THRESHOLD = {"sigmoid": 4.0, "tanh": 2.0}
"""abs(z) beyond which a sigmoid/tanh unit counts as saturated. Both thresholds put the
derivative at about 7% of its peak: sigmoid'(4) = 0.0177 (peak 0.25 at z = 0) and
tanh'(2) = 0.0707 (peak 1). Backpropagation multiplies the gradient by this derivative, so a
saturated unit passes on less than a fourteenth of what it would pass at its centre, and a
layer of them (or a chain of two) starves every layer below it (Nielsen, ch. 3 and 5)."""
SAT_OUTPUTS = ("sigmoid", "quadratic")
"""Output kinds whose output units are sigmoids (threshold SAT_THRESHOLD['sigmoid'])."""

PROBE_SAMPLES = 128
"""The probes use at most this many samples of the engine's probe batch (its first 512
training samples), taken with an even stride so that a class-sorted training set still shows
every class. 128 samples see every class of the built-in sets many times over, and keep the
probe pass (one forward + backward per epoch, shared by the gradient and activity probes)
near two training steps of batch 64: at these widths every op's cost grows with the batch."""

PROBE_DENSE = 10
"""The probes record every epoch up to PROBE_DENSE (where most of the action is: dying units,
spikes, the first steps off a flat start), then every `stride` epochs with stride the smallest
of 1, 2, 5, 10, 20, 50, ... that leaves at most PROBE_LATER more records, and at every
sharpness epoch and phase end. A 200-epoch run gets 21 probe records (0-10, then every 20):
enough for a curve and for 'dead from epoch N', and it keeps recording and storing the probes
near a quarter of the cost of a sweep whose steps run in the compiled kernel (the store keeps
one row per metric per record). Epochs without a record are absent (None)."""
PROBE_LATER = 10

SHARPNESS_BASE = (1,)
"""Sharpness is measured at epoch 0, at epochs 1, 10, 100, 1000, ..., and at the last epoch
of every phase: at the start and right after the first epoch, where the catapult of a
too-large lr happens (the curvature changes most there), then once per decade. A 200-epoch
run gets 5 measurements (0, 1, 10, 100, 200). Each costs a few Hessian-vector products on the
probe batch, about as much as 5-10 probe records, so they are sampled, not taken every
epoch."""
SHARPNESS_ITERS = 8
"""Power-iteration steps of the first (cold) measurement of a cohort (at most; a member stops
once its estimate changes by less than SHARPNESS_TOL relative between steps). On the blobs
nets at init, where the top of the spectrum is nearly degenerate (the output biases' softmax
curvature), 8 cold steps land within about 5% of an 80-step estimate: ample for a comparison
with 2/lr. The Rayleigh quotient approaches the top eigenvalue from below."""
SHARPNESS_WARM_ITERS = 5
"""Steps of every later measurement: each member starts from its own top eigenvector of the
previous measurement (a warm start: the direction drifts slowly), and usually settles in two
to four steps."""
SHARPNESS_MIN_SAMPLES = 64
"""The curvature a gradient step feels is that of the loss it differentiates: a minibatch's
for SGD, the whole training set's for full-batch descent, and a small batch's Hessian is
sharper than the full set's (its top eigenvalue is an average of fewer per-sample Hessians:
on the trained blobs nets the top eigenvalue on 64 samples is up to 2.7x that on 512). So the
sharpness is measured on a fixed subset of the probe batch of the run's batch size, at least
SHARPNESS_MIN_SAMPLES (fewer samples make the estimate erratic), and on the whole probe batch
(its first 512 training samples) for full-batch training. The comparison with 2/lr is about
factors, not percents."""
PROBE_BATCH = 512
"""The engine's probe batch: its first 512 training samples (engine.run_cohort)."""
SHARPNESS_TOL = 1e-2
"""1%: far finer than the factor-of-two questions the 2/lr line answers (is lr above or below
the limit?), and it lets the iteration stop early once every member has settled."""


# ----------------------------------------------------------------------------- helpers


def probe_batch(x: Tensor, y: Tensor, n: int = PROBE_SAMPLES) -> tuple[Tensor, Tensor]:
    """At most n samples of (x, y), evenly strided: the batch every probe uses."""
    step = max(1, -(-x.shape[0] // n))
    return x[::step], y[::step]


def _norms(ts: Sequence[Tensor]) -> Tensor:
    """Per-member Frobenius norm over a list of [K, ...] tensors: [K]."""
    if len(ts) == 1:
        return torch.linalg.vector_norm(ts[0].flatten(1), dim=1)
    return torch.linalg.vector_norm(torch.cat([t.flatten(1) for t in ts], 1), dim=1)


def _probe(name: str) -> Callable[[EpochHook], EpochHook]:
    def deco(fn: EpochHook) -> EpochHook:
        fn.__name__ = name  # the engine names a failing probe by this
        return fn
    return deco


# ----------------------------------------------------------------------------- sharpness


def top_eigenvalue(hvp: Callable[[Tensor], Tensor], v0: Tensor, iters: int = SHARPNESS_ITERS,
                   tol: float = SHARPNESS_TOL) -> Tensor:
    """Largest (algebraic) eigenvalue of K independent symmetric matrices: [K].

    `hvp(v)` maps v: [K, N] to [H_1 v_1, ..., H_K v_K]: [K, N] (members never mix). Power
    iteration finds each member's eigenvalue of largest magnitude; where that is negative (at a
    saddle, where negative curvature can dominate), a second power iteration on the shifted
    matrix H - lambda I (all its eigenvalues >= 0) finds lambda_max - lambda. A member stops
    when its Rayleigh quotient changed by less than `tol` (relative) in one step, or after
    `iters` steps. A member whose Hessian is zero gets 0.
    """
    return _top_eigen(hvp, v0, iters, tol)[0]


def _top_eigen(hvp: Callable[[Tensor], Tensor], v0: Tensor, iters: int, tol: float
               ) -> tuple[Tensor, Tensor]:
    """(top eigenvalue [K], its unit eigenvector estimate [K, N])."""
    lam, v = _power(hvp, v0, v0.new_zeros(v0.shape[0]), iters, tol)
    if bool((lam < 0).any()):
        shift = lam.clamp(max=0)
        mu, v2 = _power(hvp, v0, shift, iters, tol)
        neg = (lam < 0)[:, None]
        lam, v = mu + shift, torch.where(neg, v2, v)
    return lam, v


def _power(hvp: Callable[[Tensor], Tensor], v0: Tensor, shift: Tensor, iters: int,
           tol: float) -> tuple[Tensor, Tensor]:
    """Power iteration on H - shift I per member: each member's Rayleigh quotient from the
    step at which it settled (its own tolerance test, never its cohort's, so a member's
    estimate does not depend on the members it is batched with) and the unit vector it
    settled on."""
    tiny = torch.finfo(v0.dtype).tiny
    v = v0 / torch.linalg.vector_norm(v0, dim=1, keepdim=True).clamp_min(tiny)  # [K, N]
    lam = torch.zeros_like(shift)
    vec = v
    done = torch.zeros_like(shift, dtype=torch.bool)
    for i in range(max(1, iters)):
        hv = hvp(v) - shift[:, None] * v
        new = (v * hv).sum(1)  # Rayleigh quotient (v has unit norm)
        settled = (new - lam).abs() <= tol * new.abs() if i > 0 else done
        lam = torch.where(done, lam, new)
        vec = torch.where(done[:, None], vec, v)
        done = done | settled
        if bool(done.all()):
            break
        v = hv / torch.linalg.vector_norm(hv, dim=1, keepdim=True).clamp_min(tiny)
    return torch.nan_to_num(lam, nan=0.0), vec


def preconditioner(state: Any) -> Tensor | None:
    """The diagonal preconditioner P [K, N] of an adaptive optimizer's state (lrlab.optim,
    after at least one step), in the parameters' flat order; None for the SGD family (no
    preconditioner) and before the first step.

    - Adam/AdamW: P = sqrt(v / (1 - beta2^t)) + eps (sqrt of the bias-corrected second moment);
    - RMSprop: P = sqrt(v) + eps, with v - gbar^2 in place of v when centered;
    - Adagrad: P = sqrt(sum of g^2) + eps.
    The optimizer's step is lr P^-1 (its direction), so its stability is set by the
    eigenvalues of P^-1/2 H P^-1/2.
    """
    if not isinstance(state, dict) or "hp" not in state:
        return None
    count = state.get("count")
    if count is None or not bool((count > 0).all()):
        return None
    hp = state["hp"]
    eps = hp["eps"].unsqueeze(1)
    if "exp_avg_sq" in state:
        bc2 = 1 - hp["beta2"] ** count.to(hp["beta2"].dtype)
        return (state["exp_avg_sq"] / bc2.unsqueeze(1)).sqrt() + eps
    if "square_avg" in state:
        var = state["square_avg"]
        if "grad_avg" in state:
            gbar = state["grad_avg"]
            var = torch.where(hp["centered"].unsqueeze(1), var - gbar * gbar, var)
        return var.sqrt() + eps
    if "sum" in state:
        return state["sum"].sqrt() + eps
    return None


def hessian_top(loss: Callable[[list[Tensor]], Tensor], params: Sequence[Tensor],
                iters: int = SHARPNESS_ITERS, tol: float = SHARPNESS_TOL,
                v0: Tensor | None = None, precond: Tensor | None = None) -> Tensor:
    """Top Hessian eigenvalue of K independent losses: `loss(params) -> [K]`, member k's loss
    depending only on member k's slice of `params` (a list of [K, ...] tensors): [K].

    One double-backward graph serves all members: the gradient of sum_k loss_k is the stack of
    the members' gradients, and its vector-Jacobian product with a stacked v is the stack of
    the members' Hessian-vector products H_k v_k. The start vector `v0` ([K, N], N = numel of
    one member's parameters) defaults to the same fixed pseudo-random direction for every
    member, so a member's estimate does not depend on its cohort. With `precond` P ([K, N],
    positive) it is the top eigenvalue of P^-1/2 H P^-1/2 (the preconditioned sharpness), by
    products D H (D v) with D = P^-1/2. `params` are not modified.
    """
    return _hessian_top(loss, params, iters, tol, v0, precond)[0]


def _hessian_top(loss: Callable[[list[Tensor]], Tensor], params: Sequence[Tensor],
                 iters: int, tol: float, v0: Tensor | None,
                 precond: Tensor | None = None) -> tuple[Tensor, Tensor]:
    K = params[0].shape[0]
    n = sum(p[0].numel() for p in params)
    with torch.enable_grad():
        ps = [p.detach().requires_grad_(True) for p in params]
        g = torch.autograd.grad(loss(ps).sum(), ps, create_graph=True)
        if v0 is None:
            gen = torch.Generator().manual_seed(0x5A1)
            v0 = torch.randn(n, generator=gen, dtype=torch.float64)
            v0 = v0.to(device=ps[0].device, dtype=ps[0].dtype).expand(K, -1)

        g_flat = torch.cat([gi.reshape(K, -1) for gi in g], 1)  # [K, N]

        def hvp(v: Tensor) -> Tensor:
            # d(g . v)/dparams = H v; a scalar output (no grad_outputs: torch.autograd.grad
            # with explicit grad_outputs imports sympy, ~0.6 s, on first use)
            hv = torch.autograd.grad((g_flat * v).sum(), ps, retain_graph=True,
                                     allow_unused=True)
            return torch.cat([(torch.zeros_like(p) if h is None else h).reshape(K, -1)
                              for h, p in zip(hv, ps)], 1).detach()

        if precond is not None:
            d = precond.to(g_flat.dtype).rsqrt()  # D = P^-1/2: [K, N]

            def op(v: Tensor) -> Tensor:
                return d * hvp(d * v)
        else:
            op = hvp
        lam, vec = _top_eigen(op, v0, iters, tol)
        return lam.detach(), vec.detach()


def sharpness(params: Sequence[Tensor], x: Tensor, y: Tensor, arch: nets.Arch,
              iters: int = SHARPNESS_ITERS, tol: float = SHARPNESS_TOL,
              v0: Tensor | None = None) -> Tensor:
    """Top eigenvalue of the Hessian of each member's mean training loss on (x, y): [K]."""
    return _sharpness(params, x, y, arch, iters, tol, v0)[0]


def _sharpness(params: Sequence[Tensor], x: Tensor, y: Tensor, arch: nets.Arch, iters: int,
               tol: float, v0: Tensor | None, precond: Tensor | None = None
               ) -> tuple[Tensor, Tensor]:
    def loss(ps: list[Tensor]) -> Tensor:
        return hvp_loss(hvp_forward(ps, x, arch), y, arch)

    return _hessian_top(loss, params, iters, tol, v0, precond)


def hvp_forward(params: Sequence[Tensor], x: Tensor, arch: nets.Arch) -> Tensor:
    """`nets.forward`'s output [K, B, C], written for double backward: a (leaky) ReLU is a
    product with its 0/1 (slope) mask, taken as a constant (its derivative is 0 wherever it
    exists), so every Hessian-vector product multiplies by the mask instead of re-evaluating
    clamp_min's backward (a `where`, the costliest op of the double graph here). The values
    and all derivatives equal `nets.forward`'s wherever no pre-activation is exactly 0."""
    h = x
    relu = {"relu": 0.0, "leaky_relu": nets.LEAKY_SLOPE}.get(arch.activation)
    for i in range(arch.n_layers):
        w, b = params[2 * i], params[2 * i + 1]
        z = (torch.matmul(h, w) if h.dim() == 2 else torch.bmm(h, w)) + b  # [K, B, fo]
        if i == arch.n_layers - 1:
            return z
        if relu is None:
            h = nets.act(arch.activation, z)
        else:
            with torch.no_grad():  # 1 where z > 0, else the slope (exactly, in z's dtype)
                mask = (z > 0).to(z.dtype) * (1 - relu) + relu
            h = z * mask
    raise AssertionError("an Arch has at least one layer")


def hvp_loss(z: Tensor, y: Tensor, arch: nets.Arch) -> Tensor:
    """Each member's mean loss [K], equal to `nets.loss_terms(z, y, arch)[0].mean(1)`, from
    torch's fused losses (cheap double backward: no max/abs/clamp branches to re-evaluate)."""
    K, B, C = z.shape
    yk = y.long().expand(K, B)
    if arch.output == "softmax":
        return torch.nn.functional.cross_entropy(z.transpose(1, 2), yk,
                                                 reduction="none").mean(1)
    if arch.output == "sigmoid" and C == 1:
        return torch.nn.functional.binary_cross_entropy_with_logits(
            z[..., 0], yk.to(z.dtype), reduction="none").mean(1)
    onehot = torch.nn.functional.one_hot(yk, C).to(z.dtype)
    if arch.output == "sigmoid":
        return torch.nn.functional.binary_cross_entropy_with_logits(
            z, onehot, reduction="none").mean((1, 2))
    diff = torch.sigmoid(z) - onehot  # quadratic (Nielsen)
    return 0.5 * (diff * diff).sum(-1).mean(1)


def sharpness_epochs(ends: Iterable[int], base: Sequence[int] = SHARPNESS_BASE) -> frozenset[int]:
    """Epoch 0, base x 10^k (1, 3, 10, 30, ...) up to the last end, and every end (the last
    epoch of each phase)."""
    ends = sorted(set(int(e) for e in ends))
    last = ends[-1] if ends else 0
    out = {0, *ends}
    k = 0
    while 10**k <= max(last, 1):
        out.update(b * 10**k for b in base if b * 10**k <= last)
        k += 1
    return frozenset(out)


def probe_epochs(ends: Iterable[int], dense: int = PROBE_DENSE,
                 later: int = PROBE_LATER) -> frozenset[int]:
    """Every epoch up to `dense`, then every `stride` epochs (1-2-5 x 10^k, the smallest that
    leaves at most `later` records), the sharpness epochs and every end (see PROBE_DENSE)."""
    ends = sorted(set(int(e) for e in ends))
    last = ends[-1] if ends else 0
    out = set(range(min(dense, last) + 1)) | sharpness_epochs(ends) | set(ends)
    stride, k = 1, 0
    while (last - dense) / stride > later:
        k += 1
        stride = (1, 2, 5)[k % 3] * 10 ** (k // 3)
    out.update(range(dense - dense % stride + stride, last + 1, stride))
    return frozenset(out)


def phase_ends(spec: Spec) -> set[int]:
    """The last epoch of every phase, for every member of the spec (epochs count across
    phases, as the engine records them)."""
    ends: set[int] = set()
    for m in members(spec):
        e = 0
        for t in (m.train, *m.phases):
            e += t.epochs
            ends.add(e)
    return ends


# ----------------------------------------------------------------------------- the probes


@dataclass
class _Pass:
    """One forward + backward on the probe batch, shared by the gradient and activity probes."""

    ctx: EpochContext
    y: Tensor  # [P] labels of the probe batch
    z_out: Tensor  # [K, P, C] output pre-activations
    hidden: list[tuple[Tensor, Tensor]]  # per hidden layer (z, act(z)), [K, P, width] each
    grads: list[Tensor]  # like params


def _probe_pass(ctx: EpochContext, memo: list[_Pass] | None = None) -> _Pass:
    """The probe batch's forward and backward. With a `memo` shared by several hooks it is
    computed once per record point (the hooks of one record point get the same context)."""
    if memo and memo[0].ctx is ctx:
        return memo[0]
    x, y = probe_batch(ctx.x_probe, ctx.y_probe)
    with torch.no_grad():
        z, cache = nets.forward(ctx.params, x, ctx.arch, keep=True)
        grads = _backward(ctx.params, cache, z, y, ctx.arch)
    pas = _Pass(ctx, y, z, [(zl, al) for _, zl, al in cache[:-1]], grads)
    if memo is not None:
        memo[:] = [pas]
    return pas


def _backward(params: Sequence[Tensor], cache: list[tuple[Tensor, Tensor, Tensor]], z: Tensor,
              y: Tensor, arch: nets.Arch) -> list[Tensor]:
    """dLoss/dparams from a kept forward: the backward of `nets.loss_and_grads`, written here
    so that the probes reuse the forward pass they need anyway (tests check it against
    autograd)."""
    dz = nets.loss_terms(z, y, arch)[2] * (1.0 / z.shape[1])  # the loss is a batch mean
    grads: list[Tensor] = [torch.empty(0)] * len(params)
    for i in range(arch.n_layers - 1, -1, -1):
        h_in, zl, al = cache[i]
        if i < arch.n_layers - 1:
            g = nets.act_grad(arch.activation, zl, al)
            if g is not None:
                dz = dz * g
        # h_in: [P, fi] shared (layer 1) or [K, P, fi]; dz: [K, P, fo]
        grads[2 * i] = torch.matmul(h_in.t(), dz) if h_in.dim() == 2 else \
            torch.bmm(h_in.transpose(1, 2), dz)
        grads[2 * i + 1] = dz.sum(1, keepdim=True)
        if i > 0:
            dz = torch.bmm(dz, params[2 * i].transpose(1, 2))
    return grads


@_probe("gradients")
def gradient_probes(ctx: EpochContext, memo: list[_Pass] | None = None) -> dict[str, Tensor]:
    """grad_norm_l{l} (weights of layer l) and grad_norm (all parameters) on the probe batch."""
    grads = _probe_pass(ctx, memo).grads
    out = {f"grad_norm_l{i + 1}": _norms([grads[2 * i]]) for i in range(ctx.arch.n_layers)}
    out["grad_norm"] = _norms(grads)
    return out


@_probe("weights")
def weight_probes(ctx: EpochContext) -> dict[str, Tensor]:
    """weight_norm_l{l}, and update_ratio_l{l} against the previous record (not at epoch 0)."""
    out: dict[str, Tensor] = {}
    with torch.no_grad():
        for i in range(ctx.arch.n_layers):
            w = ctx.params[2 * i]
            out[f"weight_norm_l{i + 1}"] = _norms([w])
            if ctx.prev_params is not None:
                prev = ctx.prev_params[2 * i]
                out[f"update_ratio_l{i + 1}"] = _norms([w - prev]) / _norms([prev])
    return out


@_probe("activity")
def activity_probes(ctx: EpochContext, memo: list[_Pass] | None = None) -> dict[str, Tensor]:
    """Dead and saturated units, predicted-class shares and output spread on the probe batch."""
    arch = ctx.arch
    pas = _probe_pass(ctx, memo)
    z_out, y = pas.z_out, pas.y
    with torch.no_grad():
        out: dict[str, Tensor] = {}
        dead_n, dead_units = 0, 0
        sat_sum, sat_n = 0, 0
        for i, (z, a) in enumerate(pas.hidden):  # z, a: [K, P, width]
            if arch.activation in DEAD_ACTIVATIONS:
                # dead: z <= 0 for every sample <=> the sum of relu(z) over the samples is 0
                # (a sum of non-negative floats is 0 only if every term is; and it is far
                # cheaper than a max over the middle axis)
                pos = a if arch.activation == "relu" else z.clamp_min(0)
                dead = (pos.sum(1) == 0).sum(1)  # [K]
                out[f"dead_frac_l{i + 1}"] = dead / z.shape[2]
                dead_n = dead_n + dead
                dead_units += z.shape[2]
            elif arch.activation in SAT_THRESHOLD:
                sat = (z.abs() > SAT_THRESHOLD[arch.activation]).flatten(1).sum(1)
                out[f"sat_frac_l{i + 1}"] = sat / (z.shape[1] * z.shape[2])
                sat_sum = sat_sum + sat
                sat_n += z.shape[1] * z.shape[2]
        if arch.output in SAT_OUTPUTS:
            sat = (z_out.abs() > SAT_THRESHOLD["sigmoid"]).flatten(1).sum(1)
            out[f"sat_frac_l{arch.n_layers}"] = sat / (z_out.shape[1] * z_out.shape[2])
            sat_sum = sat_sum + sat
            sat_n += z_out.shape[1] * z_out.shape[2]
        if dead_units:
            out["dead_frac"] = dead_n / dead_units
        if sat_n:
            out["sat_frac"] = sat_sum / sat_n
        K, P, C = z_out.shape
        pred = (z_out[..., 0] > 0).long() if C == 1 else z_out.argmax(-1)  # [K, P]
        counts = z_out.new_zeros(K, max(2, C)).scatter_add_(1, pred, z_out.new_ones(K, P))
        out["top_class_share"] = counts.amax(1) / P
        labels = y.tolist()
        out["majority_share"] = z_out.new_full((K,), max(map(labels.count, set(labels))) / P)
        dev = z_out - z_out.mean(1, keepdim=True)
        out["output_spread"] = dev.pow(2).sum(1).div(max(P - 1, 1)).sqrt().mean(1)
    return out


def sharpness_probe(epochs: Iterable[int], iters: int = SHARPNESS_ITERS,
                    tol: float = SHARPNESS_TOL, warm_iters: int = SHARPNESS_WARM_ITERS,
                    samples: int = PROBE_SAMPLES) -> EpochHook:
    """A hook measuring `sharpness` at the given epochs only (absent elsewhere), on `samples`
    of the probe batch (see `sharpness_samples`). From the second measurement of a cohort on,
    each member starts from its own previous top eigenvector (kept per cohort position; a
    new cohort starts at epoch 0)."""
    at = frozenset(epochs)
    last: dict[int, Tensor] = {}  # cohort position -> that member's last eigenvector
    last_pre: dict[int, Tensor] = {}  # the same for the preconditioned sharpness

    def measure(ctx: EpochContext, x: Tensor, y: Tensor, memo: dict[int, Tensor],
                precond: Tensor | None) -> Tensor:
        pos = ctx.active.tolist()
        v0 = torch.stack([memo[j] for j in pos]) if memo and all(j in memo for j in pos) \
            else None
        n_it = iters if v0 is None else warm_iters
        lam, vec = _sharpness(ctx.params, x, y, ctx.arch, n_it, tol, v0) if precond is None \
            else _sharpness(ctx.params, x, y, ctx.arch, n_it, tol, v0, precond)
        memo.update(zip(pos, vec))
        return torch.where(torch.isfinite(lam), lam, torch.full_like(lam, math.nan))

    @_probe("sharpness")
    def probe(ctx: EpochContext) -> dict[str, Tensor]:
        if ctx.epoch == 0:
            last.clear()
            last_pre.clear()
        if ctx.epoch not in at:
            return {}
        x, y = probe_batch(ctx.x_probe, ctx.y_probe, samples)
        out = {"sharpness": measure(ctx, x, y, last, None)}
        p = preconditioner(ctx.opt_state)
        if p is not None:
            out["precond_sharpness"] = measure(ctx, x, y, last_pre, p)
        return out

    return probe


def _every(epochs: frozenset[int], hook: EpochHook) -> EpochHook:
    """`hook` at the given epochs only."""

    @_probe(hook.__name__)
    def probe(ctx: EpochContext) -> dict[str, Tensor]:
        return hook(ctx) if ctx.epoch in epochs else {}

    return probe


def hooks(spec: Spec) -> list[EpochHook]:
    """The probes a sweep of this spec records (runner.default_hooks calls this)."""
    memo: list[_Pass] = []  # gradients and activity share one forward + backward

    @_probe("gradients")
    def gradients(ctx: EpochContext) -> dict[str, Tensor]:
        return gradient_probes(ctx, memo)

    @_probe("activity")
    def activity(ctx: EpochContext) -> dict[str, Tensor]:
        try:
            return activity_probes(ctx, memo)
        finally:
            memo.clear()  # hold no tensors between record points

    ends = phase_ends(spec)
    at = probe_epochs(ends)
    return [_every(at, gradients), _every(at, weight_probes), _every(at, activity),
            sharpness_probe(sharpness_epochs(ends), samples=sharpness_samples(spec))]


def sharpness_samples(spec: Spec) -> int:
    """How many probe samples the sharpness is measured on (see SHARPNESS_MIN_SAMPLES): the
    training batch size when every member and phase uses one (at least SHARPNESS_MIN_SAMPLES,
    at most the engine's 512-sample probe batch), the whole probe batch when every member
    trains full-batch, PROBE_SAMPLES when the batch sizes differ."""
    sizes = {t.batch_size for m in members(spec) for t in (m.train, *m.phases)}
    if sizes == {0}:
        return PROBE_BATCH
    if len(sizes) == 1:
        return min(max(sizes.pop(), SHARPNESS_MIN_SAMPLES), PROBE_BATCH)
    return PROBE_SAMPLES
