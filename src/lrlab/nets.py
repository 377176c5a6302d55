"""The batched MLP: K members' weights stacked on a leading axis, forward and backward by hand.

Parameters are a flat list `[W1, b1, W2, b2, ...]` with `W: [K, fan_in, fan_out]` and
`b: [K, 1, fan_out]`. Every derivative sits beside its forward (STYLE 9). The loss of a member
is the mean over its batch, so plain SGD on it is Keras/PyTorch SGD, and it is also Nielsen's
update `w -= lr/len(batch) * summed_gradient` for the quadratic cost.

The hand-written backward is checked against autograd in float64 (tests/test_nets.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from lrlab.spec import ModelSpec

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
    return z + b  # z: [K, B, fo]


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
    K, B, C = z.shape
    if y.dim() == 1:
        y = y.expand(K, B)
    if arch.output == "softmax":
        # written out: torch.softmax over 3-4 classes is ~5x slower here (notes/perf.md)
        m = z.amax(-1, keepdim=True)
        e = torch.exp(z - m)
        s = e.sum(-1, keepdim=True)
        zy = z.gather(-1, y.unsqueeze(-1))
        loss = (m + torch.log(s) - zy).squeeze(-1)
        dz = e / s
        dz.scatter_add_(-1, y.unsqueeze(-1), torch.full_like(zy, -1.0))
        correct = z.argmax(-1) == y
        return loss, correct, dz
    if arch.output == "sigmoid" and C == 1:
        t = y.to(z.dtype).unsqueeze(-1)
        loss = (z.clamp_min(0) - z * t + torch.log1p(torch.exp(-z.abs()))).squeeze(-1)
        dz = torch.sigmoid(z) - t
        correct = (z.squeeze(-1) > 0) == (y == 1)
        return loss, correct, dz
    onehot = torch.zeros_like(z).scatter_(-1, y.unsqueeze(-1), 1.0)
    correct = z.argmax(-1) == y
    if arch.output == "sigmoid":
        loss = (z.clamp_min(0) - z * onehot + torch.log1p(torch.exp(-z.abs()))).mean(-1)
        return loss, correct, (torch.sigmoid(z) - onehot) / C
    a = torch.sigmoid(z)  # quadratic
    diff = a - onehot
    return 0.5 * (diff * diff).sum(-1), correct, diff * a * (1 - a)


# ----------------------------------------------------------------------------- backward


def loss_and_grads(params: Sequence[Tensor], x: Tensor, y: Tensor, arch: Arch
                   ) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Mean batch loss [K], batch accuracy [K] and gradients (same shapes as params)."""
    z, cache = forward(params, x, arch, keep=True)
    B = z.shape[1]
    loss, correct, dz = loss_terms(z, y, arch)
    dz = dz * (1.0 / B)  # the loss is a mean over the batch
    grads: list[Tensor] = [torch.empty(0)] * len(params)
    for i in range(arch.n_layers - 1, -1, -1):
        h_in = cache[i][0]
        if i < arch.n_layers - 1:  # through the activation of layer i
            g = act_grad(arch.activation, cache[i][1], cache[i][2])
            if g is not None:
                dz = dz * g
        # h_in: [K, B, fi] (or [B, fi] shared), dz: [K, B, fo]
        if h_in.dim() == 2:
            grads[2 * i] = torch.matmul(h_in.t(), dz)
        else:
            grads[2 * i] = torch.bmm(h_in.transpose(1, 2), dz)  # dW: [K, fi, fo]
        grads[2 * i + 1] = dz.sum(1, keepdim=True)  # db: [K, 1, fo]
        if i > 0:
            dz = torch.bmm(dz, params[2 * i].transpose(1, 2))  # dh: [K, B, fi]
    return loss.mean(1), correct.to(z.dtype).mean(1), grads


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
