"""Batched optimizers: one optax-style `init`/`update` pair trains K members at once.

Every parameter tensor has a leading member axis K (`W: [K, fan_in, fan_out]`, or any
`[K, ...]` from `torch.func.stack_module_state`), and every hyperparameter is a `[K]` tensor,
so any of them can differ between members of one cohort (a sweep axis).

Each update equals the matching `torch.optim` step for every member (to float rounding):

| name | torch.optim | family |
| --- | --- | --- |
| sgd, momentum, nesterov | `SGD(lr, momentum, dampening, weight_decay, nesterov)` | sgd |
| adagrad | `Adagrad(lr, lr_decay, weight_decay, initial_accumulator_value, eps)` | adagrad |
| rmsprop | `RMSprop(lr, alpha, eps, weight_decay, momentum, centered)` | rmsprop |
| adam | `Adam(lr, betas, eps, weight_decay)` (L2 added to the gradient) | adam |
| adamw | `AdamW(lr, betas, eps, weight_decay)` (decoupled: `p *= 1 - lr * wd`) | adamw |

`sgd`, `momentum` and `nesterov` are one family: momentum, dampening and Nesterov are per-member
values, and a member with momentum 0 is exactly torch's SGD without momentum.

How it is computed (STYLE 1, 2):
- The state is a dict of `[K, ...]` tensors: the moment buffers, flattened over all parameters
  into one `[K, P]` tensor each (few kernel launches however many layers), the step count
  `count: [K]` and the hyperparameters themselves under `hp` (so `compact` drops a diverged
  member's hyperparameters together with its buffers, and nothing per-member lives elsewhere).
- Each optimizer first computes an unscaled direction `u` and a per-member step size (`lr`,
  `lr / (1 + (t-1) lr_decay)` for Adagrad, `lr / (1 - beta1^t)` for Adam); the lr enters in that
  one place: `update = -step_size * u` (AdamW then subtracts `lr * wd * p`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from lrlab.errors import LrlabError

if TYPE_CHECKING:
    from lrlab.spec import TrainSpec

Params = list[torch.Tensor]
State = dict[str, Any]  # tensors with leading dim K, nested dicts of them, python ints
Hyper = dict[str, torch.Tensor]  # name -> [K] tensor


class Optimizer(NamedTuple):
    """A pair of pure functions (optax's `GradientTransformation`, plus the step's lr).

    `init(params) -> state`; `update(grads, state, params, lr) -> (updates, new_state)` with
    `lr: [K]` the lr for this step. The caller applies `params[i] += updates[i]`. Neither
    function modifies its arguments.
    """

    init: Callable[[Params], State]
    update: Callable[[Params, State, Params, torch.Tensor], tuple[Params, State]]


FAMILY: dict[str, str] = {
    "sgd": "sgd",
    "momentum": "sgd",
    "nesterov": "sgd",
    "adagrad": "adagrad",
    "rmsprop": "rmsprop",
    "adam": "adam",
    "adamw": "adamw",
}

# TrainSpec fields that become [K] hyperparameter tensors.
FLOAT_KEYS = (
    "lr", "momentum", "dampening", "weight_decay", "beta1", "beta2", "eps", "alpha",
    "initial_accumulator_value", "lr_decay",
)
BOOL_KEYS = ("nesterov", "centered")
DEFAULTS: dict[str, dict[str, float]] = {
    "adagrad": {"eps": 1e-10},
    "adamw": {"weight_decay": 1e-2},
}
"""torch.optim's own defaults where a TrainSpec leaves a key as None (optimizer's default)."""
BASE_DEFAULTS: dict[str, float] = {"eps": 1e-8, "weight_decay": 0.0}


def resolved(t: TrainSpec, key: str) -> float:
    """A hyperparameter's value, with None meaning torch.optim's default for this optimizer."""
    v = getattr(t, key)
    if v is None:
        return DEFAULTS.get(t.optimizer, {}).get(key, BASE_DEFAULTS[key])
    return float(v)


# ----------------------------------------------------------------------------- hyperparameters


def hyperparams(
    trains: Sequence[TrainSpec],
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Hyper:
    """The members' hyperparameters as `[K]` tensors (flags as bool tensors).

    `trains` are the members' resolved `TrainSpec`s (`spec.members()` has already turned the
    names momentum/nesterov into the flags). All must share one optimizer family. Nesterov
    without momentum, or with dampening, is rejected as torch's SGD rejects it.
    """
    if not trains:
        raise ValueError("hyperparams needs at least one member")
    families = {FAMILY[t.optimizer] for t in trains}
    if len(families) != 1:
        raise ValueError(f"one cohort needs one optimizer family; got {sorted(families)}")
    for t in trains:
        if t.nesterov and (t.momentum <= 0 or t.dampening != 0):
            raise LrlabError(
                "`[train].nesterov` needs momentum > 0 and dampening = 0 (as torch.optim.SGD); "
                f"got momentum {t.momentum!r}, dampening {t.dampening!r}"
            )
    hp = {
        k: torch.tensor([resolved(t, k) for t in trains], device=device, dtype=dtype)
        for k in FLOAT_KEYS
    }
    for k in BOOL_KEYS:
        hp[k] = torch.tensor([bool(getattr(t, k)) for t in trains], device=device)
    return hp


def compact_hp(hp: Hyper, keep: torch.Tensor) -> Hyper:
    """Keep only members `keep` (indices into K) of a hyperparameter dict."""
    return compact(hp, keep)


def compact(state: Any, keep: torch.Tensor) -> Any:
    """Keep only members `keep` of a state: `index_select` on every `[K, ...]` tensor.

    Works on nested dicts, lists and tuples; python numbers pass through. A bool mask `[K]` is
    accepted as well as indices.
    """
    if keep.dtype == torch.bool:
        keep = keep.nonzero().squeeze(1)
    if isinstance(state, torch.Tensor):
        return state.index_select(0, keep.to(state.device)) if state.dim() else state
    if isinstance(state, dict):
        return {k: compact(v, keep) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(compact(v, keep) for v in state)
    return state


# ----------------------------------------------------------------------------- flat layout


def _flat(ts: Sequence[torch.Tensor]) -> torch.Tensor:
    """`[K, ...]` tensors -> one `[K, P]` tensor (a view when there is only one)."""
    if len(ts) == 1:
        return ts[0].reshape(ts[0].shape[0], -1)
    return torch.cat([t.reshape(t.shape[0], -1) for t in ts], dim=1)


def _sizes(params: Sequence[torch.Tensor]) -> list[int]:
    """Elements per member of each parameter."""
    return [p.numel() // p.shape[0] if p.shape[0] else 0 for p in params]


def _unflat(flat: torch.Tensor, like: Sequence[torch.Tensor]) -> Params:
    """`[K, P]` -> views shaped like `like` (no copies)."""
    parts = flat.split_with_sizes(_sizes(like), dim=1)
    return [part.view(p.shape) for part, p in zip(parts, like, strict=True)]


def _col(v: torch.Tensor) -> torch.Tensor:
    """`[K]` -> `[K, 1]`, broadcasting a per-member value over a `[K, P]` buffer."""
    return v.unsqueeze(1)


def _zeros(params: Params) -> torch.Tensor:
    p0 = params[0]
    return torch.zeros(p0.shape[0], sum(_sizes(params)), dtype=p0.dtype, device=p0.device)


def _any(v: torch.Tensor) -> bool:
    """Whether any member uses a feature (decided once in `make`: one host sync)."""
    return bool((v != 0).any())


# ----------------------------------------------------------------------------- optimizers


def make(name: str, hp: Hyper) -> Optimizer:
    """The batched optimizer `name` for the members described by `hp` (see `hyperparams`).

    `hp` is stored in the state by `init`, so `compact(state, keep)` keeps it in step with the
    members. Features no member uses (weight decay, momentum, centering) cost nothing.
    """
    if name not in FAMILY:
        raise LrlabError(f"`[train].optimizer` must be one of {', '.join(FAMILY)}; got {name!r}")
    family = FAMILY[name]
    build = {"sgd": _sgd, "adagrad": _adagrad, "rmsprop": _rmsprop, "adam": _adam,
             "adamw": _adam}[family]
    return build(hp, decoupled=family == "adamw")


def _l2(g: torch.Tensor, params: Params, hp: Hyper, on: bool) -> torch.Tensor:
    """torch's weight decay as L2 on the gradient: `g + wd * p`."""
    return torch.addcmul(g, _col(hp["weight_decay"]), _flat(params)) if on else g


def _scale(u: torch.Tensor, step_size: torch.Tensor) -> torch.Tensor:
    """The one place the lr enters: `-step_size * u` per member."""
    return u * _col(-step_size)


def _sgd(hp: Hyper, decoupled: bool = False) -> Optimizer:
    """torch.optim.SGD, per member.

    `g <- g + wd p`; `buf <- g` on the first step, then `buf <- m buf + (1 - dampening) g`;
    direction `g + m buf` (Nesterov) or `buf`; update `-lr * direction`. Members with `m = 0`
    use `g` directly, as torch does (dampening ignored).
    """
    wd_on, mom_on, nest_on = _any(hp["weight_decay"]), _any(hp["momentum"]), _any(hp["nesterov"])

    def init(params: Params) -> State:
        state: State = {"count": torch.zeros(params[0].shape[0], dtype=torch.long,
                                             device=params[0].device), "hp": dict(hp)}
        if mom_on:
            state["buf"] = _zeros(params)
        return state

    def update(grads: Params, state: State, params: Params, lr: torch.Tensor):
        h, count = state["hp"], state["count"]
        g = _l2(_flat(grads), params, h, wd_on)  # [K, P]
        new: State = {"count": count + 1, "hp": h}
        u = g
        if mom_on:
            m = h["momentum"]
            # the first step copies g into the buffer (buf is 0, so m * 0 + 1 * g); m = 0: buf = g
            c = torch.where((m == 0) | (count == 0), torch.ones_like(m), 1 - h["dampening"])
            buf = torch.addcmul(state["buf"] * _col(m), _col(c), g)
            new["buf"] = buf
            u = torch.where(_col(h["nesterov"]), torch.addcmul(g, _col(m), buf), buf) \
                if nest_on else buf
        return _unflat(_scale(u, lr), grads), new

    return Optimizer(init, update)


def _adagrad(hp: Hyper, decoupled: bool = False) -> Optimizer:
    """torch.optim.Adagrad, per member.

    `g <- g + wd p`; `sum <- sum + g^2` (starting at `initial_accumulator_value`);
    update `-lr / (1 + (t - 1) lr_decay) * g / (sqrt(sum) + eps)`, t = 1, 2, ...
    """
    wd_on = _any(hp["weight_decay"])

    def init(params: Params) -> State:
        s = _zeros(params) + _col(hp["initial_accumulator_value"]).to(params[0].dtype)
        return {"count": torch.zeros(params[0].shape[0], dtype=torch.long,
                                     device=params[0].device), "sum": s, "hp": dict(hp)}

    def update(grads: Params, state: State, params: Params, lr: torch.Tensor):
        h, count = state["hp"], state["count"]
        g = _l2(_flat(grads), params, h, wd_on)
        s = torch.addcmul(state["sum"], g, g)
        u = g / (s.sqrt() + _col(h["eps"]))
        step_size = lr / (1 + count * h["lr_decay"])  # count = t - 1
        return _unflat(_scale(u, step_size), grads), {"count": count + 1, "sum": s, "hp": h}

    return Optimizer(init, update)


def _rmsprop(hp: Hyper, decoupled: bool = False) -> Optimizer:
    """torch.optim.RMSprop, per member.

    `g <- g + wd p`; `v <- alpha v + (1 - alpha) g^2`; centered: `gbar <- lerp(gbar, g,
    1 - alpha)` and `v~ = v - gbar^2`, else `v~ = v`; `d = g / (sqrt(v~) + eps)`;
    momentum: `buf <- m buf + d` (from 0) and direction `buf`, else `d`; update `-lr * direction`.
    """
    wd_on, mom_on, cen_on = _any(hp["weight_decay"]), _any(hp["momentum"]), _any(hp["centered"])

    def init(params: Params) -> State:
        state: State = {"count": torch.zeros(params[0].shape[0], dtype=torch.long,
                                             device=params[0].device),
                        "square_avg": _zeros(params), "hp": dict(hp)}
        if cen_on:
            state["grad_avg"] = _zeros(params)
        if mom_on:
            state["buf"] = _zeros(params)
        return state

    def update(grads: Params, state: State, params: Params, lr: torch.Tensor):
        h = state["hp"]
        g = _l2(_flat(grads), params, h, wd_on)
        a = _col(h["alpha"])
        v = torch.addcmul(state["square_avg"] * a, g * (1 - a), g)
        new: State = {"count": state["count"] + 1, "square_avg": v, "hp": h}
        var = v
        if cen_on:
            gbar = torch.lerp(state["grad_avg"], g, 1 - a)
            new["grad_avg"] = gbar
            var = torch.where(_col(h["centered"]), torch.addcmul(v, gbar, gbar, value=-1), v)
        d = g / (var.sqrt() + _col(h["eps"]))
        if mom_on:
            d = state["buf"] * _col(h["momentum"]) + d
            new["buf"] = d
        return _unflat(_scale(d, lr), grads), new

    return Optimizer(init, update)


def _adam(hp: Hyper, decoupled: bool = False) -> Optimizer:
    """torch.optim.Adam (`decoupled=False`) or AdamW (`decoupled=True`), per member.

    Adam: `g <- g + wd p`. Both: `m <- lerp(m, g, 1 - b1)`, `v <- b2 v + (1 - b2) g^2`,
    `u = m / (sqrt(v) / sqrt(1 - b2^t) + eps)`, update `-lr / (1 - b1^t) * u`.
    AdamW adds `-lr * wd * p` (torch's `p *= 1 - lr * wd` before the Adam step).
    """
    wd_on = _any(hp["weight_decay"])

    def init(params: Params) -> State:
        return {"count": torch.zeros(params[0].shape[0], dtype=torch.long,
                                     device=params[0].device),
                "exp_avg": _zeros(params), "exp_avg_sq": _zeros(params), "hp": dict(hp)}

    def update(grads: Params, state: State, params: Params, lr: torch.Tensor):
        h = state["hp"]
        t = state["count"] + 1
        g = _flat(grads)
        if not decoupled:
            g = _l2(g, params, h, wd_on)
        b1, b2 = h["beta1"], h["beta2"]
        m = torch.lerp(state["exp_avg"], g, _col(1 - b1))
        v = torch.addcmul(state["exp_avg_sq"] * _col(b2), g * _col(1 - b2), g)
        bc1, bc2 = 1 - b1**t, 1 - b2**t
        u = m / (v.sqrt() / _col(bc2.sqrt()) + _col(h["eps"]))
        upd = _scale(u, lr / bc1)
        if decoupled and wd_on:
            upd = torch.addcmul(upd, _col(-lr * h["weight_decay"]), _flat(params))
        new = {"count": t, "exp_avg": m, "exp_avg_sq": v, "hp": h}
        return _unflat(upd, grads), new

    return Optimizer(init, update)
