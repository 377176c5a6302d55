"""The batched MLP: K members' weights stacked on a leading axis, forward and backward by hand.

Parameters are a flat list `[W1, b1, W2, b2, ...]` with `W: [K, fan_in, fan_out]` and
`b: [K, 1, fan_out]`. Every derivative sits beside its forward. The loss of a member
is the mean over its batch, so plain SGD on it is Keras/PyTorch SGD, and it is also Nielsen's
update `w -= lr/len(batch) * summed_gradient` for the quadratic cost.

The hand-written backward is checked against autograd in float64 (tests/test_nets.py).

`Stack` holds a cohort's parameters as one flat tensor and trains them; on the CPU it uses the
same forward, loss and backward compiled as one fused kernel (nets_kernel.c, members as SIMD
lanes; checked against this file in tests/test_kernel.py), elsewhere the torch code below.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import functools
import hashlib
import math
import os
import platform
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lrlab.spec import ModelSpec

try:
    import fcntl
except ImportError:  # not on Windows: concurrent first compiles then simply race
    fcntl = None  # type: ignore[assignment]

Tensor = torch.Tensor

LEAKY_SLOPE = 0.01  # torch.nn.LeakyReLU's default negative slope


@dataclass(frozen=True)
class Arch:
    """Layer sizes from input to output, the hidden activation and the output/loss kind."""

    sizes: tuple[int, ...]  # (d_in, h1, ..., d_out)
    activation: str
    output: str  # softmax | sigmoid | quadratic

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    def n_params(self) -> int:
        return sum((a + 1) * b for a, b in zip(self.sizes[:-1], self.sizes[1:]))


def output_dim(output: str, n_classes: int) -> int:
    """One sigmoid unit for a binary problem with BCE; otherwise one unit per class."""
    return 1 if output == "sigmoid" and n_classes == 2 else n_classes


def arch_for(model: ModelSpec, d_in: int, n_classes: int) -> Arch:
    return Arch((d_in, *model.hidden, output_dim(model.output, n_classes)),
                model.activation, model.output)


# ----------------------------------------------------------------------------- init


def _draw(scheme: str, fan_in: int, fan_out: int, shape: tuple[int, ...],
          gen: torch.Generator) -> Tensor:
    """One array from an initializer, drawn in float64 on the CPU (device- and dtype-free)."""

    def uniform(lo: float, hi: float) -> Tensor:
        return lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=torch.float64)

    def normal(std: float) -> Tensor:
        return std * torch.randn(shape, generator=gen, dtype=torch.float64)

    if scheme.startswith("normal:"):
        return normal(float(scheme.split(":")[1]))
    if scheme.startswith("uniform:"):
        _, lo, hi = scheme.split(":")
        return uniform(float(lo), float(hi))
    limits = {  # uniform schemes: the limit a of U(-a, a)
        "glorot_uniform": math.sqrt(6.0 / (fan_in + fan_out)),
        "he_uniform": math.sqrt(6.0 / fan_in),
        "lecun_uniform": math.sqrt(3.0 / fan_in),
        "pytorch": 1.0 / math.sqrt(fan_in),  # nn.Linear: kaiming_uniform(a=sqrt(5)) and its bias
    }
    stds = {  # normal schemes (untruncated, as torch.nn.init)
        "glorot_normal": math.sqrt(2.0 / (fan_in + fan_out)),
        "he_normal": math.sqrt(2.0 / fan_in),
        "lecun_normal": math.sqrt(1.0 / fan_in),
        "nielsen": 1.0,
    }
    if scheme in limits:
        return uniform(-limits[scheme], limits[scheme])
    if scheme in stds:
        return normal(stds[scheme])
    if scheme in ("zeros", "keras_bias"):
        return torch.zeros(shape, dtype=torch.float64)
    raise ValueError(f"unknown initializer {scheme!r}")  # spec validation makes this unreachable


def _weight_scheme(init: str) -> str:
    return "glorot_uniform" if init == "keras" else init


def _bias_scheme(model: ModelSpec, weight_init: str) -> str:
    if model.bias_init != "auto":
        return model.bias_init
    return {"pytorch": "pytorch", "nielsen": "nielsen"}.get(weight_init, "zeros")


def layer_inits(model: ModelSpec, n_layers: int) -> list[str]:
    """The weight initializer of each layer (one scheme for all, or one per layer)."""
    if isinstance(model.init, str):
        return [model.init] * n_layers
    if len(model.init) != n_layers:
        from lrlab.errors import LrlabError

        raise LrlabError(
            f"`[model].init` lists {len(model.init)} initializers but the network has "
            f"{n_layers} layers; give one per layer or a single one"
        )
    return list(model.init)


def init_member(arch: Arch, model: ModelSpec, seed: int) -> list[Tensor]:
    """One member's parameters (float64, CPU, no K axis), from its own seed only.

    Draw order: W1, b1, W2, b2, ... so a member's init never depends on the cohort.
    """
    gen = torch.Generator().manual_seed(int(seed))
    out: list[Tensor] = []
    shapes = zip(arch.sizes[:-1], arch.sizes[1:])
    for (fi, fo), init in zip(shapes, layer_inits(model, arch.n_layers)):
        w = _draw(_weight_scheme(init), fi, fo, (fi, fo), gen) * model.init_scale
        b = _draw(_bias_scheme(model, init), fi, fo, (1, fo), gen) * model.init_scale
        out += [w, b]
    return out


def init_params(arch: Arch, models: Sequence[ModelSpec], seeds: Sequence[int],
                device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
                ) -> list[Tensor]:
    """Stacked parameters for K members: each [K, ...]."""
    per = [init_member(arch, m, s) for m, s in zip(models, seeds)]
    return [torch.stack([p[i] for p in per]).to(device=device, dtype=dtype)
            for i in range(len(per[0]))]


# ----------------------------------------------------------------------------- activations


def act(name: str, z: Tensor) -> Tensor:
    if name == "relu":
        return z.clamp_min(0)
    if name == "tanh":
        return torch.tanh(z)
    if name == "sigmoid":
        return torch.sigmoid(z)
    if name == "leaky_relu":
        return torch.where(z > 0, z, z * LEAKY_SLOPE)
    if name == "gelu":
        return torch.nn.functional.gelu(z)
    return z  # linear


def act_grad(name: str, z: Tensor, a: Tensor) -> Tensor | None:
    """d act / d z, from the pre-activation z and the activation a = act(z); None = 1."""
    if name == "relu":
        return (z > 0).to(z.dtype)
    if name == "tanh":
        return 1 - a * a
    if name == "sigmoid":
        return a * (1 - a)
    if name == "leaky_relu":
        return (z > 0).to(z.dtype) * (1 - LEAKY_SLOPE) + LEAKY_SLOPE
    if name == "gelu":  # exact gelu: Phi(z) + z * phi(z)
        cdf = 0.5 * (1 + torch.erf(z * (1 / math.sqrt(2))))
        pdf = torch.exp(-0.5 * z * z) * (1 / math.sqrt(2 * math.pi))
        return cdf + z * pdf
    return None


# ----------------------------------------------------------------------------- forward


def _linear(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    # x: [K, B, fi] (or [B, fi], shared by all members), w: [K, fi, fo], b: [K, 1, fo]
    z = torch.matmul(x, w) if x.dim() == 2 else torch.bmm(x, w)
    return z.add_(b)  # z: [K, B, fo]; in place: one allocation fewer (baddbmm with a broadcast
    # bias measured ~3x bmm here)


def forward(params: Sequence[Tensor], x: Tensor, arch: Arch,
            keep: bool = False) -> tuple[Tensor, list[tuple[Tensor, Tensor, Tensor]]]:
    """Output-layer pre-activations [K, B, d_out]; with keep, per hidden layer (input, z, a)."""
    cache: list[tuple[Tensor, Tensor, Tensor]] = []
    h = x
    n = arch.n_layers
    for i in range(n):
        z = _linear(h, params[2 * i], params[2 * i + 1])
        if i == n - 1:
            if keep:
                cache.append((h, z, z))
            return z, cache
        a = act(arch.activation, z)
        if keep:
            cache.append((h, z, a))
        h = a
    raise AssertionError("an Arch has at least one layer")


def hidden_preacts(params: Sequence[Tensor], x: Tensor, arch: Arch) -> list[Tensor]:
    """The pre-activations z of every hidden layer, [K, B, width] each (for probes)."""
    _, cache = forward(params, x, arch, keep=True)
    return [z for _, z, _ in cache[:-1]]


# ----------------------------------------------------------------------------- loss


def loss_terms(z: Tensor, y: Tensor, arch: Arch) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample loss [K, B], per-sample correctness [K, B] and dLoss_sample/dz [K, B, C].

    y: [K, B] or [B] integer labels. Loss kinds:
      softmax:   cross-entropy of softmax(z);            dl/dz = p - onehot
      sigmoid:   binary cross-entropy of sigmoid(z);     dl/dz = (s - y) / C  (mean over units)
      quadratic: 0.5 * ||sigmoid(z) - onehot||^2 (Nielsen); dl/dz = (a - y) * a * (1 - a)
    """
    loss, dz = _loss_and_delta(z, y, arch)
    return loss, _correct(z, y), dz


def _correct(z: Tensor, y: Tensor) -> Tensor:
    """Per-sample correctness [K, B]: argmax (or sign, for one sigmoid unit) equals the label."""
    K, B, C = z.shape
    if y.dim() == 1:
        y = y.expand(K, B)
    if C == 1:
        return (z.squeeze(-1) > 0) == (y == 1)
    return z.argmax(-1) == y


def _loss_and_delta(z: Tensor, y: Tensor, arch: Arch) -> tuple[Tensor, Tensor]:
    """loss_terms without the correctness (the training step does not need it)."""
    K, B, C = z.shape
    if y.dim() == 1:
        y = y.expand(K, B)
    if arch.output == "softmax":
        # written out: torch.softmax over 3-4 classes is ~5x slower here (measured)
        m = z.amax(-1, keepdim=True)
        e = torch.exp(z - m)
        s = e.sum(-1, keepdim=True)
        zy = z.gather(-1, y.unsqueeze(-1))
        loss = (m + torch.log(s) - zy).squeeze(-1)
        dz = e / s if z.requires_grad else e.div_(s)  # (in place only outside autograd)
        dz.scatter_add_(-1, y.unsqueeze(-1), torch.full_like(zy, -1.0))
        return loss, dz
    if arch.output == "sigmoid" and C == 1:
        t = y.to(z.dtype).unsqueeze(-1)
        loss = (z.clamp_min(0) - z * t + torch.log1p(torch.exp(-z.abs()))).squeeze(-1)
        return loss, torch.sigmoid(z) - t
    onehot = torch.zeros_like(z).scatter_(-1, y.unsqueeze(-1), 1.0)
    if arch.output == "sigmoid":
        loss = (z.clamp_min(0) - z * onehot + torch.log1p(torch.exp(-z.abs()))).mean(-1)
        return loss, (torch.sigmoid(z) - onehot) / C
    a = torch.sigmoid(z)  # quadratic
    diff = a - onehot
    return 0.5 * (diff * diff).sum(-1), diff * a * (1 - a)


# ----------------------------------------------------------------------------- backward


def act_backward(name: str, dh: Tensor, z: Tensor, a: Tensor) -> Tensor:
    """dLoss/dz from dLoss/da: dh * act'(z), as one fused op (autograd's own backward ops)."""
    if name == "relu":
        return torch.ops.aten.threshold_backward(dh, a, 0)  # a > 0 exactly where z > 0
    if name == "tanh":
        return torch.ops.aten.tanh_backward(dh, a)  # dh * (1 - a^2)
    if name == "sigmoid":
        return torch.ops.aten.sigmoid_backward(dh, a)  # dh * a * (1 - a)
    if name == "leaky_relu":
        return torch.ops.aten.leaky_relu_backward(dh, z, LEAKY_SLOPE, False)
    if name == "gelu":
        return torch.ops.aten.gelu_backward(dh, z)
    return dh  # linear


def backprop(params: Sequence[Tensor], x: Tensor, y: Tensor, arch: Arch
             ) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Per-sample loss [K, B], output pre-activations [K, B, C] and the gradients of the mean
    batch loss (same shapes as params). The hand-written backward of `forward`."""
    z, cache = forward(params, x, arch, keep=True)
    B = z.shape[1]
    loss, dz = _loss_and_delta(z, y, arch)
    dz = dz.mul_(1.0 / B)  # the loss is a mean over the batch
    grads: list[Tensor] = [torch.empty(0)] * len(params)
    for i in range(arch.n_layers - 1, -1, -1):
        h_in = cache[i][0]
        if i < arch.n_layers - 1:  # through the activation of layer i
            dz = act_backward(arch.activation, dz, cache[i][1], cache[i][2])
        # h_in: [K, B, fi] (or [B, fi] shared), dz: [K, B, fo]
        if h_in.dim() == 2:
            grads[2 * i] = torch.matmul(h_in.t(), dz)
        else:
            grads[2 * i] = torch.bmm(h_in.transpose(1, 2), dz)  # dW: [K, fi, fo]
        grads[2 * i + 1] = dz.sum(1, keepdim=True)  # db: [K, 1, fo]
        if i > 0:
            dz = torch.bmm(dz, params[2 * i].transpose(1, 2))  # dh: [K, B, fi]
    return loss, z, grads


def loss_and_grads(params: Sequence[Tensor], x: Tensor, y: Tensor, arch: Arch
                   ) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Mean batch loss [K], batch accuracy [K] and gradients (same shapes as params).

    On the CPU the compiled kernel computes them when it covers the net (`kernel_for`); the
    gradients are then views of one member-innermost [P, K] tensor."""
    kern = kernel_for(arch, x.device, x.dtype) if all(
        p.device == x.device and p.dtype == x.dtype for p in params) else None
    if kern is not None:
        return _kernel_loss_and_grads(kern, params, x, y, arch)
    loss, z, grads = backprop(params, x, y, arch)
    return loss.mean(1), _correct(z, y).to(z.dtype).mean(1), grads


def _kernel_loss_and_grads(kern: Kernel, params: Sequence[Tensor], x: Tensor, y: Tensor,
                           arch: Arch) -> tuple[Tensor, Tensor, list[Tensor]]:
    K = params[0].shape[0]
    _need(x.dim() in (2, 3) and (x.dim() == 2 or x.shape[0] == K),
          lambda: f"x must be [B, d] (shared) or [{K}, B, d] (one batch per member); "
          f"got {_describe(x)}")
    _need(tuple(y.shape) in (tuple(x.shape[-2:-1]), tuple(x.shape[:-1])),
          lambda: f"labels must be [B] or [{K}, B] for x {list(x.shape)}; got {_describe(y)}")
    flat = torch.cat([p.detach().reshape(K, -1) for p in params], 1)  # [K, P]
    soa = torch.empty(flat.shape[1], K, dtype=flat.dtype).t().copy_(flat)
    if x.dim() == 2:  # one batch shared by every member
        B, rows, labels, order = x.shape[0], x.detach().contiguous(), y, None
    else:  # member k's batch: rows k*B .. (k+1)*B of the stacked batches
        B = x.shape[1]
        rows = x.detach().reshape(K * B, -1).contiguous()
        labels = y.expand(K, B) if y.dim() == 1 else y
        order = torch.arange(K * B, dtype=torch.int64).view(K, B)
    labels = labels.reshape(-1).to(torch.int64).contiguous()
    correct = torch.empty(K, dtype=torch.float64)
    loss, g = kern.train(soa, rows, labels, order, 0, B, correct)
    sizes = [p[0].numel() for p in params]
    grads = [part.view(p.shape) for part, p in zip(g.split(sizes, 1), params)]
    dtype = x.dtype
    return (loss / B).to(dtype), (correct / B).to(dtype), grads


@torch.no_grad()
def evaluate(params: Sequence[Tensor], x: Tensor, y: Tensor, arch: Arch,
             chunk: int = 1 << 22) -> tuple[Tensor, Tensor, Tensor]:
    """Mean loss [K], accuracy [K] and predicted labels [K, N] on a shared set x: [N, d].

    Chunked over samples so that K x N x width never exceeds about `chunk` elements.
    """
    K = params[0].shape[0]
    width = max(arch.sizes)
    step = max(1, chunk // max(1, K * width))
    losses, corrects, preds = [], [], []
    for i in range(0, x.shape[0], step):
        z, _ = forward(params, x[i : i + step], arch)
        loss, correct, _ = loss_terms(z, y[i : i + step], arch)
        losses.append(loss)
        corrects.append(correct)
        preds.append((z.squeeze(-1) > 0).long() if z.shape[-1] == 1 else z.argmax(-1))
    loss = torch.cat(losses, 1)
    correct = torch.cat(corrects, 1)
    return loss.mean(1), correct.to(loss.dtype).mean(1), torch.cat(preds, 1)


def predict(params: Sequence[Tensor], x: Tensor, arch: Arch) -> Tensor:
    """Predicted class per member and sample [K, N] for a shared x: [N, d]."""
    with torch.no_grad():
        z, _ = forward(params, x, arch)
    return (z.squeeze(-1) > 0).long() if z.shape[-1] == 1 else z.argmax(-1)


# ----------------------------------------------------------------------------- a cohort's stack


class Stack:
    """K members' parameters as one flat `[K, P]` tensor, with their fused step and evaluation.

    `flat` holds each member's W1, b1, W2, b2, ... flattened in that order (optim's flat layout,
    so an optimizer updates it as one tensor), and `params` are `[W, b, ...]` views of it. With
    the compiled CPU kernel (`kernel_for`) its storage is member-innermost (`[P, K]` in memory,
    `flat` is the transposed view): K members' copies of a weight are then one SIMD vector.
    Otherwise it is a contiguous `[K, P]` tensor trained with `backprop` (batched matmuls).

    Training data are given once; `begin_epoch(order)` sets every member's sample order (or
    None: the whole set as one shared batch) and `loss_and_grads(lo, hi)` takes one step's
    gradients on positions lo:hi of those orders.
    """

    def __init__(self, arch: Arch, params: Sequence[Tensor], x: Tensor, y: Tensor,
                 kernel: Kernel | None = None, gather_bytes: int = 256 * 2**20) -> None:
        K = params[0].shape[0]
        self.arch, self.kernel, self.gather_bytes = arch, kernel, gather_bytes
        self.x, self.y = x.contiguous(), y.contiguous()  # [n, d], [n]
        self.flat = self.layout(torch.cat([p.reshape(K, -1) for p in params], 1))
        self.params = self._views()
        if kernel is not None:
            kernel.check(self.flat, self.x, self.y)
        self.order: Tensor | None = None
        self._xe: Tensor | None = None
        self._ye: Tensor | None = None

    @property
    def k(self) -> int:
        return self.flat.shape[0]

    def layout(self, t: Tensor) -> Tensor:
        """A `[K, P]` tensor copied into this stack's memory layout (fresh storage)."""
        if self.kernel is None:
            return t.clone(memory_format=torch.contiguous_format)
        return torch.empty(t.shape[1], t.shape[0], dtype=t.dtype, device=t.device).t().copy_(t)

    def _views(self) -> list[Tensor]:
        out, o, K = [], 0, self.flat.shape[0]
        for fi, fo in zip(self.arch.sizes[:-1], self.arch.sizes[1:]):
            out.append(self.flat[:, o : o + fi * fo].view(K, fi, fo))
            out.append(self.flat[:, o + fi * fo : o + (fi + 1) * fo].view(K, 1, fo))
            o += (fi + 1) * fo
        return out

    def keep(self, idx: Tensor) -> None:
        """Keep only members `idx` (compaction after a divergence)."""
        self.flat = self.layout(self.flat.index_select(0, idx))
        self.params = self._views()
        if self.kernel is not None and self.flat.shape[0]:  # none left: every member diverged
            self.kernel.check(self.flat, self.x, self.y)
        self.order = self._xe = self._ye = None

    def begin_epoch(self, order: Tensor | None) -> None:
        """order: [K, n] sample indices per member (each row a permutation of 0..n-1), or None
        for one shared full batch. A wrong order raises ValueError (checked in one pass)."""
        if order is not None:
            _check_permutations(order, self.k, self.x.shape[0])
        self.order, self._xe, self._ye = order, None, None
        if order is None or self.kernel is not None:
            if order is not None:
                self.order = order.to(torch.int64).contiguous()
            return
        if order.numel() * self.x.shape[1] * self.x.element_size() <= self.gather_bytes:
            self._xe, self._ye = self.x[order], self.y[order]  # [K, n, d], [K, n]: steps take views

    def loss_and_grads(self, lo: int, hi: int) -> tuple[Tensor, Tensor]:
        """Summed loss over the batch [K] (float64) and gradients of the mean batch loss
        [K, P] (in this stack's layout) for positions lo:hi of every member's order."""
        if self.kernel is not None:
            return self.kernel.train(self.flat, self.x, self.y, self.order, lo, hi)
        if self.order is None:
            xb, yb = self.x[lo:hi], self.y[lo:hi]  # [B, d] shared
        elif self._xe is not None:
            xb, yb = self._xe[:, lo:hi], self._ye[:, lo:hi]  # type: ignore[index]
        else:
            sel = self.order[:, lo:hi]
            xb, yb = self.x[sel], self.y[sel]
        loss, _, grads = backprop(self.params, xb, yb, self.arch)
        return loss.sum(1, dtype=torch.float64), \
            torch.cat([g.reshape(g.shape[0], -1) for g in grads], 1)

    def sgd_epoch(self, bounds: Sequence[tuple[int, int]], lrs: Tensor) -> Tensor:
        """A whole epoch of plain SGD on the kernel path (`bounds`: each step's positions in
        the members' orders, `lrs`: [steps, K]): the parameters are updated in place; returns
        the batch losses summed over the epoch [K] (float64)."""
        if self.kernel is None:
            raise RuntimeError("sgd_epoch needs the compiled kernel")
        return self.kernel.sgd_epoch(self.flat, self.x, self.y, self.order, bounds, lrs)

    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor, n_tr: int
                 ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """Mean loss and accuracy [K] on rows :n_tr of the shared set x and on the rest (None
        when there is no rest), from one pass over both."""
        n = x.shape[0]
        if self.kernel is not None:
            sums = self.kernel.evaluate(self.flat, x, y, n_tr).to(self.flat.dtype)
            tr = (sums[0] / n_tr, sums[1] / n_tr)
            if n == n_tr:
                return tr[0], tr[1], None, None
            return tr[0], tr[1], sums[2] / (n - n_tr), sums[3] / (n - n_tr)
        K = self.k
        step = max(1, (1 << 22) // max(1, K * max(self.arch.sizes)))
        losses, corrects = [], []
        for i in range(0, n, step):
            z, _ = forward(self.params, x[i : i + step], self.arch)
            loss, _ = _loss_and_delta(z, y[i : i + step], self.arch)
            losses.append(loss)
            corrects.append(_correct(z, y[i : i + step]))
        loss = torch.cat(losses, 1) if len(losses) > 1 else losses[0]
        correct = (torch.cat(corrects, 1) if len(corrects) > 1 else corrects[0]).to(loss.dtype)
        tr = (loss[:, :n_tr].mean(1), correct[:, :n_tr].mean(1))
        if n == n_tr:
            return tr[0], tr[1], None, None
        return tr[0], tr[1], loss[:, n_tr:].mean(1), correct[:, n_tr:].mean(1)


# ----------------------------------------------------------------------------- compiled kernel
# nets_kernel.c: the same forward, loss and backward for the CPU, fused into one call per step
# (SIMD across members). Compiled on first use with the system C compiler, cached per source,
# compiler, flags and CPU in a private folder, and checked against its recorded hash before it is
# loaded; without a compiler (or with LRLAB_KERNEL=0) the torch path above is used. Every
# argument is checked here before it crosses into C: a bad one is a Python error, not a crash.

KERNEL_SOURCE = Path(__file__).with_name("nets_kernel.c")
KERNEL_ACTIVATIONS = {"linear": 0, "relu": 1, "leaky_relu": 2, "tanh": 3, "sigmoid": 4}
KERNEL_OUTPUTS = {"softmax": 0, "sigmoid": 1, "quadratic": 2}
KERNEL_MAX_LAYERS = 64
KERNEL_GEMM_FIRST = 256
"""Evaluation computes a first layer with at least this fan-in (MNIST's 784) as one BLAS GEMM
over all members: 1.5-2x faster there than the kernel's own loops, slower for digits' 64."""
KERNEL_GEMM_BYTES = 8 << 20
"""... and takes the samples in parts whose products fill about this many bytes."""
KERNEL_PARALLEL_MACS = 2_000_000
"""Per-step work (members x batch x parameters) above which one step is split over threads."""
kernel_error: str | None = None
"""Why the kernel is not available (None when it is, or has not been tried yet)."""


def kernel_for(arch: Arch, device: torch.device | str, dtype: torch.dtype) -> Kernel | None:
    """The compiled kernel for this net, or None (other device, dtype or activation; no C
    compiler; or LRLAB_KERNEL=0 in the environment)."""
    if torch.device(device).type != "cpu" or dtype not in (torch.float32, torch.float64):
        return None
    if arch.activation not in KERNEL_ACTIVATIONS or arch.output not in KERNEL_OUTPUTS:
        return None
    if arch.n_layers > KERNEL_MAX_LAYERS:
        return None
    lib = kernel_lib()
    return None if lib is None else Kernel(lib, arch, dtype)


class Kernel:
    """ctypes bindings of the compiled kernel for one architecture and dtype.

    Calls release the GIL, so with `threads` > 1 the members are split into that many lane
    ranges run by threads at once (each range is a whole number of SIMD tiles).
    """

    def __init__(self, lib: ctypes.CDLL, arch: Arch, dtype: torch.dtype) -> None:
        _need(1 <= arch.n_layers <= KERNEL_MAX_LAYERS,
              lambda: f"a net of 1 to {KERNEL_MAX_LAYERS} layers; got {arch.n_layers}")
        _need(all(isinstance(s, int) and 1 <= s < 2**31 for s in arch.sizes),
              lambda: f"layer sizes from 1 to 2^31 - 1; got {arch.sizes}")
        _need(arch.activation in KERNEL_ACTIVATIONS and arch.output in KERNEL_OUTPUTS,
              lambda: f"an activation in {sorted(KERNEL_ACTIVATIONS)} and an output in "
              f"{sorted(KERNEL_OUTPUTS)}; got {arch.activation!r}, {arch.output!r}")
        _need(dtype in (torch.float32, torch.float64), lambda: f"float32 or float64; got {dtype}")
        self.arch, self.dtype = arch, dtype
        self.cfg = torch.tensor([arch.n_layers, KERNEL_ACTIVATIONS[arch.activation],
                                 KERNEL_OUTPUTS[arch.output], *arch.sizes], dtype=torch.int64)
        suffix = "f64" if dtype == torch.float64 else "f32"
        self.lanes = 8 if dtype == torch.float64 else 16  # the widest tile
        self._train = getattr(lib, f"lr_train_{suffix}")
        self._sgd = getattr(lib, f"lr_sgd_epoch_{suffix}")
        self._eval = getattr(lib, f"lr_eval_{suffix}")
        self._shared: dict[int, Tensor] = {}
        self._seen: dict[str, tuple[Tensor, int, int]] = {}
        self._P = arch.n_params()
        self._classes = 2 if arch.sizes[-1] == 1 else arch.sizes[-1]  # 1 sigmoid unit: 0 or 1
        self.threads = 1
        self.sgd_lanes = 0  # no cap: the widest tiles were fastest even where W leaves L2

    def check(self, flat: Tensor, x: Tensor, y: Tensor) -> None:
        """What the C side assumes, or ValueError naming what is wrong: `flat` a [K, P] view of
        member-innermost [P, K] storage (Stack.layout), x contiguous [n, d] of the kernel's
        dtype, y contiguous int64 [n] labels in [0, classes), all on the CPU. The shapes cost
        O(1); the labels are scanned once per tensor (and again after it is changed)."""
        a = self.arch
        for name, t in (("parameters", flat), ("x", x), ("labels", y)):
            _need(isinstance(t, Tensor) and t.device.type == "cpu",
                  lambda name=name, t=t: f"{name} must be a CPU tensor; got {_describe(t)}")
        _need(flat.dim() == 2 and flat.shape[1] == self._P and flat.dtype == self.dtype,
              lambda: f"parameters must be [K, {self._P}] {self.dtype}; got {_describe(flat)}")
        K = flat.shape[0]
        _need(flat.stride(1) == K and (K == 1 or flat.stride(0) == 1),
              lambda: f"parameters must be member-innermost (strides (1, {K}), see Stack.layout); "
              f"got strides {flat.stride()}")
        _need(x.dim() == 2 and x.shape[1] == a.sizes[0] and x.dtype == self.dtype
              and x.is_contiguous(),
              lambda: f"x must be contiguous [n, {a.sizes[0]}] {self.dtype}; got {_describe(x)}")
        _need(y.dim() == 1 and y.shape[0] == x.shape[0] and y.dtype == torch.int64
              and y.is_contiguous(),
              lambda: f"labels must be contiguous [{x.shape[0]}] int64; got {_describe(y)}")
        classes = self._classes
        if y.numel() and not self._checked("labels", y, classes):
            lo, hi = int(y.min()), int(y.max())
            _need(lo >= 0 and hi < classes,
                  lambda: f"labels must lie in [0, {classes}); got values from {lo} to {hi}")
            self._remember("labels", y, classes)

    def _checked(self, role: str, t: Tensor, bound: int) -> bool:
        """Whether this very tensor, unchanged since, was checked against `bound` before."""
        seen = self._seen.get(role)
        return seen is not None and seen[0] is t and seen[1] == t._version and seen[2] == bound

    def _remember(self, role: str, t: Tensor, bound: int) -> None:
        self._seen[role] = (t, t._version, bound)

    def _check_order(self, order: Tensor | None, K: int, n: int) -> int:
        """An order is a CPU int64 [K, m] tensor with contiguous rows (member k reads
        order[k, lo:hi]) and every entry a row of x, in [0, n). Returns m (n for None: the
        shared order 0..n-1). The entries are scanned once per tensor and version."""
        if order is None:
            return n
        _need(isinstance(order, Tensor) and order.device.type == "cpu"
              and order.dtype == torch.int64 and order.dim() == 2 and order.shape[0] == K
              and (order.shape[1] <= 1 or order.stride(1) == 1) and order.stride(0) >= 0,
              lambda: f"order must be a CPU int64 [{K}, m] tensor with contiguous rows; "
              f"got {_describe(order)}")
        if order.numel() and not self._checked("order", order, n):
            lo, hi = int(order.min()), int(order.max())
            _need(lo >= 0 and hi < n,
                  lambda: f"order entries must be rows of x, in [0, {n}); got values from "
                  f"{lo} to {hi}")
            self._remember("order", order, n)
        return order.shape[1]

    def _arange(self, n: int) -> Tensor:
        if n not in self._shared:
            self._shared = {n: torch.arange(n, dtype=torch.int64)}
        return self._shared[n]

    def _run(self, fn: Any, K: int, args: Callable[[int, int], tuple[Any, ...]],
             parallel: bool = True) -> None:
        """fn(*args(k_begin, k_end)) over lane ranges (threads at once); raise on failure."""
        parts = min(self.threads, -(-K // self.lanes)) if parallel else 1
        if parts <= 1:
            codes = [fn(*args(0, K))]
        else:  # ranges of whole tiles
            cut = [min(K, -(-K * i // parts // self.lanes) * self.lanes) for i in range(parts)]
            ranges = list(zip(cut, [*cut[1:], K]))
            codes = list(_pool(parts).map(lambda r: fn(*args(*r)), ranges))
        for rc in codes:
            if rc == 2:
                raise MemoryError("nets_kernel.c: out of memory")
            if rc:
                raise RuntimeError(f"nets_kernel.c: configuration not supported ({rc})")

    def _order(self, x: Tensor, order: Tensor | None) -> tuple[Tensor, int]:
        if order is None:  # one shared batch: every member reads the rows in order
            return self._arange(x.shape[0]), 0
        return order, order.stride(0)

    def train(self, flat: Tensor, x: Tensor, y: Tensor, order: Tensor | None, lo: int, hi: int,
              correct: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(summed batch loss [K], gradient of the mean batch loss, laid out like `flat`);
        the number of correct predictions per member into `correct` [K] float64 if given."""
        self.check(flat, x, y)
        K, P = flat.shape
        m = self._check_order(order, K, x.shape[0])
        _need(_is_int(lo) and _is_int(hi) and 0 <= lo < hi <= m,
              lambda: f"lo and hi must be integers with 0 <= lo < hi <= {m} (the order's length); "
              f"got lo={lo!r}, hi={hi!r}")
        _need(correct is None or (isinstance(correct, Tensor) and correct.device.type == "cpu"
                                  and correct.dtype == torch.float64
                                  and correct.shape == (K,) and correct.is_contiguous()),
              lambda: f"correct must be None or a contiguous CPU float64 [{K}] tensor; "
              f"got {_describe(correct)}")
        lo, hi = int(lo), int(hi)
        grads = torch.empty(P, K, dtype=flat.dtype).t()
        loss = torch.empty(K, dtype=torch.float64)
        idx, ldi = self._order(x, order)
        big = K * (hi - lo) * P >= KERNEL_PARALLEL_MACS  # worth a thread hand-off per step
        self._run(self._train, K, lambda a, b: (
            self.cfg.data_ptr(), flat.data_ptr(), K, grads.data_ptr(), a, b, 0, x.data_ptr(),
            y.data_ptr(), idx.data_ptr(), ldi, lo, hi - lo, loss.data_ptr(),
            None if correct is None else correct.data_ptr()), big)
        return loss, grads

    def sgd_epoch(self, flat: Tensor, x: Tensor, y: Tensor, order: Tensor | None,
                  bounds: Sequence[tuple[int, int]], lrs: Tensor) -> Tensor:
        """A whole epoch of plain SGD in place on `flat` (step s on positions bounds[s] with
        lr lrs[s]: [steps, K]); returns the batch losses summed over the epoch [K]."""
        self.check(flat, x, y)
        K = flat.shape[0]
        m = self._check_order(order, K, x.shape[0])
        _need(len(bounds) > 0 and all(len(b) == 2 and _is_int(b[0]) and _is_int(b[1])
                                      for b in bounds),
              lambda: f"bounds must be a non-empty list of (lo, hi) integer pairs; got "
              f"{bounds!r:.80}")
        edges = torch.tensor([int(lo) for lo, _ in bounds] + [int(bounds[-1][1])],
                             dtype=torch.int64)
        ends = torch.tensor([int(hi) for _, hi in bounds], dtype=torch.int64)
        _need(int(edges[0]) >= 0 and int(edges[-1]) <= m and bool((ends == edges[1:]).all())
              and bool((edges[1:] > edges[:-1]).all()),
              lambda: f"bounds must be consecutive non-empty steps (lo, hi) from lo >= 0 to "
              f"hi <= {m} (the order's length), each starting where the last ended; got "
              f"{bounds!r:.80}")
        _need(isinstance(lrs, Tensor) and lrs.device.type == "cpu" and lrs.dim() == 2
              and tuple(lrs.shape) == (len(bounds), K),
              lambda: f"lrs must be a CPU [{len(bounds)}, {K}] tensor (steps x members); "
              f"got {_describe(lrs)}")
        lrs = lrs.to(self.dtype).contiguous()
        loss = torch.empty(K, dtype=torch.float64)
        idx, ldi = self._order(x, order)
        self._run(self._sgd, K, lambda a, b: (
            self.cfg.data_ptr(), flat.data_ptr(), K, a, b, self.sgd_lanes, x.data_ptr(),
            y.data_ptr(), idx.data_ptr(), ldi, edges.data_ptr(), len(bounds), lrs.data_ptr(),
            lrs.stride(0), loss.data_ptr()))
        return loss

    def evaluate(self, flat: Tensor, x: Tensor, y: Tensor, n_tr: int) -> Tensor:
        """[4, K] float64: summed loss and correct count on rows :n_tr, then on the rest.

        A wide first layer (fan-in KERNEL_GEMM_FIRST or more) is one BLAS GEMM over all
        members instead: the member-innermost W1 is a [d, h*K] matrix, and x @ it holds every
        member's products, which the kernel takes from there."""
        x, y = x.contiguous(), y.contiguous()
        self.check(flat, x, y)
        _need(_is_int(n_tr) and 0 <= n_tr <= x.shape[0],
              lambda: f"n_tr must be an integer in [0, {x.shape[0]}] (the rows of x); got {n_tr!r}")
        n_tr = int(n_tr)
        K, (d, h) = flat.shape[0], self.arch.sizes[:2]
        out = torch.zeros(4, K, dtype=torch.float64)
        if d < KERNEL_GEMM_FIRST:
            self._run(self._eval, K, lambda a, b: (
                self.cfg.data_ptr(), flat.data_ptr(), K, K, a, b, 0, x.data_ptr(), None, 0,
                y.data_ptr(), x.shape[0], n_tr, out.data_ptr()))
            return out
        w1 = flat.t()[: d * h].reshape(d, h * K)  # a view of the storage: W1[i, o * K + k]
        rows = max(1, KERNEL_GEMM_BYTES // (h * K * flat.element_size()))
        part = torch.empty(4, K, dtype=torch.float64)
        before = torch.get_num_threads()
        for lo in range(0, x.shape[0], rows):
            xs, ys = x[lo : lo + rows], y[lo : lo + rows]
            torch.set_num_threads(self.threads)
            try:
                z1 = xs @ w1  # [rows, h * K]
            finally:
                torch.set_num_threads(before)
            n_in = min(max(n_tr - lo, 0), xs.shape[0])
            self._run(self._eval, K, lambda a, b, xs=xs, ys=ys, z1=z1, n_in=n_in: (
                self.cfg.data_ptr(), flat.data_ptr(), K, K, a, b, 0, xs.data_ptr(),
                z1.data_ptr(), z1.stride(0), ys.data_ptr(), xs.shape[0], n_in, part.data_ptr()))
            out += part
        return out


def _check_permutations(order: Tensor, K: int, n: int) -> None:
    """ValueError unless `order` is an integer [K, n] tensor whose every row is a permutation
    of 0..n-1 (O(K n): a range check, then every row hits each of its n places once)."""
    ok = isinstance(order, Tensor) and order.dim() == 2 and tuple(order.shape) == (K, n) and \
        not order.is_floating_point() and not order.is_complex() and order.dtype != torch.bool
    if ok and order.numel():
        ok = bool((order.min() >= 0) & (order.max() < n))
        if ok:
            hit = torch.zeros(K, n, dtype=torch.bool, device=order.device)
            ok = bool(hit.scatter_(1, order.long(), True).all())
    if not ok:
        raise ValueError(f"an epoch's order must be an integer [{K}, {n}] tensor whose rows "
                         f"are permutations of 0..{n - 1}; got {_describe(order)}")


def _need(ok: bool, what: Callable[[], str]) -> None:
    """A kernel argument check: ValueError naming what the C side needs, before any call (the
    message is only built when the check fails: these run on every step)."""
    if not ok:
        raise ValueError(f"nets_kernel.c: {what()}")


def _is_int(v: Any) -> bool:
    """A Python or numpy integer (not a bool, not a float)."""
    return not isinstance(v, bool) and hasattr(type(v), "__index__") and \
        not isinstance(v, Tensor)


def _describe(t: Any) -> str:
    if not isinstance(t, Tensor):
        return type(t).__name__
    return (f"{list(t.shape)} {t.dtype} on {t.device.type}, strides {t.stride()}"
            + ("" if t.is_contiguous() else ", not contiguous"))


@functools.cache
def _pool(n: int) -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(n, thread_name_prefix="lrlab-kernel")


def kernel_cache_dir() -> Path:
    """Where compiled kernels are kept: $LRLAB_CACHE_DIR, else $XDG_CACHE_HOME/lrlab, else
    ~/.cache/lrlab."""
    if os.environ.get("LRLAB_CACHE_DIR"):
        return Path(os.environ["LRLAB_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lrlab"


def _cpu_id() -> str:
    """What -march=native depends on: the CPU model and its feature flags."""
    try:
        info = Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
        keep = [ln for ln in info if ln.split(":")[0].strip() in
                ("model name", "flags", "Features", "CPU part")]
        return "\n".join(sorted(set(keep)))
    except OSError:
        return platform.processor() or platform.machine()


KERNEL_FLAGS = (["-O2", "-fpeel-loops", "-fno-tree-vectorize", "-march=native"],
                ["-O2", "-fpeel-loops", "-fno-tree-vectorize"])
"""Tried in order. -O2 with complete peeling unrolls the register blocks as well as -O3 does,
in two thirds of the compile time; the code is written with vectors, so no auto-vectorizer."""
KERNEL_CFLAGS_ENV = "LRLAB_KERNEL_CFLAGS"
"""Extra compiler flags, appended to KERNEL_FLAGS when compiling and linking (part of the cache
key), e.g. "-fsanitize=address,undefined" for `make test-asan`."""
kernel_build: dict[str, str] | None = None
"""How the loaded kernel was built: compiler (its version line), flags, source (a hash)."""


def _extra_flags() -> list[str]:
    return os.environ.get(KERNEL_CFLAGS_ENV, "").split()


@functools.cache
def _compiler_version(cc: str) -> str:
    """The first line of `cc --version`, with gcc's program name made `gcc` (cc, gcc and
    x86_64-linux-gnu-gcc-12 are one compiler); the empty string when it cannot be run."""
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    try:
        r = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60,
                           env=env)
    except (OSError, subprocess.SubprocessError):
        return ""
    first = (r.stdout.strip().splitlines() or [""])[0].strip()
    if "clang" in first or not first.startswith(Path(cc).name + " "):
        return first
    return "gcc " + first.split(" ", 1)[1]


def _private_dir(d: Path) -> str | None:
    """Create `d` (mode 0700) or check the existing one is safe to load code from: owned by
    this user and writable by no one else. The problem in words, or None."""
    try:
        if not d.is_dir():
            d.parent.mkdir(parents=True, exist_ok=True)
            d.mkdir(mode=0o700, exist_ok=True)
        st = d.stat()
    except OSError as exc:
        return f"cannot create the kernel cache {d}: {exc.strerror or exc}"
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return f"the kernel cache {d} belongs to another user (uid {st.st_uid})"
    if st.st_mode & 0o022:
        return (f"the kernel cache {d} is writable by others (mode {st.st_mode & 0o777:o}); "
                "make it private (chmod 700) or set LRLAB_CACHE_DIR")
    return None


def _digest_file(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _verified(lib: Path) -> bool:
    """The cached library exists, is this user's, and its SHA-256 is the one recorded beside it
    when it was built (a damaged or replaced file is rebuilt, never loaded)."""
    try:
        if hasattr(os, "getuid") and lib.stat().st_uid != os.getuid():
            return False
        want = _digest_file(lib).read_text().strip()
        return hashlib.sha256(lib.read_bytes()).hexdigest() == want
    except OSError:
        return False


def _asan_missing(flags: Sequence[str]) -> bool:
    """An AddressSanitizer build that this process cannot load (its runtime must be loaded
    first, with LD_PRELOAD; loading it otherwise aborts the process)."""
    if not any(f.startswith("-fsanitize=") and "address" in f for f in flags):
        return False
    try:
        return "libasan" not in Path("/proc/self/maps").read_text()
    except OSError:
        return True


@functools.cache
def _kernel_lib() -> ctypes.CDLL | None:
    """Compile nets_kernel.c once per source, compiler, flags and CPU (cached on disk, checked
    against its recorded hash before loading) and load it. The float32 and float64 halves are
    compiled at once (two processes), then linked."""
    global kernel_error, kernel_build
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or \
        shutil.which("clang")
    if cc is None:
        kernel_error = "no C compiler (cc, gcc or clang) on PATH"
        return None
    cache = kernel_cache_dir()
    problem = _private_dir(cache)
    if problem:
        kernel_error = problem
        return None
    src = KERNEL_SOURCE.read_bytes()
    version = _compiler_version(cc)
    for base_flags in KERNEL_FLAGS:
        flags = [*base_flags, *_extra_flags()]
        if _asan_missing(flags):
            kernel_error = (f"{KERNEL_CFLAGS_ENV} asks for AddressSanitizer, whose runtime "
                            "must be preloaded: LD_PRELOAD=$(cc -print-file-name=libasan.so)")
            return None
        key = hashlib.sha256(b"\0".join([src, cc.encode(), version.encode(),
                                         " ".join(flags).encode(), platform.machine().encode(),
                                         _cpu_id().encode()]))
        out = cache / f"nets_kernel-{key.hexdigest()[:16]}.so"
        try:
            if not _verified(out):
                with open(out.with_suffix(".lock"), "w") as lock:
                    if fcntl is not None:  # one compile when processes start at once
                        fcntl.flock(lock, fcntl.LOCK_EX)
                    if not _verified(out):
                        error = _compile(cc, flags, out)
                        if error:
                            kernel_error = error
                            continue
            lib = ctypes.CDLL(str(out))
        except (OSError, subprocess.SubprocessError) as exc:
            kernel_error = f"building or loading {out}: {exc}"
            continue
        p, i = ctypes.c_void_p, ctypes.c_int64
        signatures = {"train": [p, p, i, p, i, i, i, p, p, p, i, i, i, p, p],
                      "sgd_epoch": [p, p, i, i, i, i, p, p, p, i, p, i, p, i, p],
                      "eval": [p, p, i, i, i, i, i, p, p, i, p, i, i, p],
                      "math": [ctypes.c_int, p, i, p]}
        for name, args in signatures.items():
            for suffix in ("f32", "f64"):
                fn = getattr(lib, f"lr_{name}_{suffix}")
                fn.argtypes, fn.restype = args, ctypes.c_int
        lib.lr_epoch_orders.argtypes = [p, i, i, i, p]
        lib.lr_epoch_orders.restype = None
        kernel_error = None
        kernel_build = {"compiler": version or Path(cc).name, "flags": " ".join(flags),
                        "source": hashlib.sha256(src).hexdigest()[:12]}
        return lib
    return None


def _compile(cc: str, flags: list[str], out: Path) -> str | None:
    """Build `out` and record its SHA-256 beside it (both atomically); the error text when the
    compiler fails."""
    stem = f"{out.stem}.{os.getpid()}"
    objs = [out.with_name(f"{stem}.{part}.o") for part in (1, 2)]
    tmp, tmp_digest = out.with_name(f"{stem}.tmp.so"), out.with_name(f"{stem}.tmp.sha256")
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}  # no sanitizer in cc
    try:
        jobs = [subprocess.Popen([cc, *flags, "-fPIC", "-std=gnu11", f"-DLR_ONLY={part}", "-c",
                                  "-o", str(obj), str(KERNEL_SOURCE)], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for part, obj in zip((1, 2), objs)]
        for job in jobs:
            _, err = job.communicate(timeout=900)
            if job.returncode != 0:
                return f"{cc} {' '.join(flags)} nets_kernel.c failed: {err.strip()[-500:]}"
        r = subprocess.run([cc, *flags, "-shared", "-o", str(tmp), *map(str, objs), "-lm"],
                           capture_output=True, text=True, timeout=120, env=env)
        if r.returncode != 0:
            return f"linking nets_kernel failed: {r.stderr.strip()[-500:]}"
        tmp_digest.write_text(hashlib.sha256(tmp.read_bytes()).hexdigest() + "\n")
        os.replace(tmp_digest, _digest_file(out))
        os.replace(tmp, out)
        return None
    finally:
        for leftover in (*objs, tmp, tmp_digest):
            leftover.unlink(missing_ok=True)


def kernel_lib() -> ctypes.CDLL | None:
    """The loaded kernel library (compiled on first use), or None; see `kernel_error`.

    LRLAB_KERNEL=0 (or off/false/no) turns it off; LRLAB_KERNEL=require raises RuntimeError
    when it cannot be built or loaded, instead of falling back to the torch path (CI)."""
    mode = os.environ.get("LRLAB_KERNEL", "1").strip().lower()
    if mode in ("0", "off", "false", "no"):
        return None
    lib = _kernel_lib()
    if lib is None and mode in ("require", "required"):
        raise RuntimeError(f"LRLAB_KERNEL={mode} but the compiled kernel is unavailable: "
                           f"{kernel_error}")
    return lib

