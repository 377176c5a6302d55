"""The cohort loop: K members of one architecture trained at once on their own data orders.

One step reads top to bottom (STYLE 8): lr, batch, forward+backward, clip, update. After each
epoch: evaluate train and val in one batched forward, record, run the probe hooks, freeze and
drop (compact) members that diverged. Members never see each other: each has its own init and
data order derived from its seed alone, so a member's curve does not depend on its cohort.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lrlab import nets, optim, schedules
from lrlab.data import Dataset
from lrlab.spec import Cohort, Member, RunSpec, TrainSpec

Tensor = torch.Tensor

DIVERGE_FACTOR = 100.0
"""A member has diverged when its training loss is non-finite, or above DIVERGE_FACTOR times
max(its loss at init, DIVERGE_FLOOR). Losses that climb two orders of magnitude above where
training started do not come back in practice (fastai's range test stops at 4x the best
*smoothed* loss; a training run gets more room, because a transient spike, as in seed 001, is
a result to explain, not a divergence)."""
DIVERGE_FLOOR = 1.0
GATHER_BYTES = 256 * 2**20
"""Gather each member's whole epoch order at once when K x n x d fits in this many bytes
(one indexed gather per epoch, steps take views); otherwise gather per step."""


@dataclass
class MemberRun:
    """What one member did: its per-epoch history, per-step lr, status and final weights."""

    member: Member
    status: str = "ok"  # ok | diverged
    diverged_epoch: int | None = None
    history: dict[str, list[float | None]] = field(default_factory=dict)
    steps: dict[str, list[float]] = field(default_factory=dict)
    params: list[np.ndarray] = field(default_factory=list)
    seconds: float = 0.0  # the cohort's wall time shared evenly over its members


@dataclass
class EpochContext:
    """What a probe hook sees at an epoch boundary (epoch 0 = at init). Tensors cover the
    active members only, in the order of `active` (indices into the cohort's members)."""

    epoch: int
    arch: nets.Arch
    params: list[Tensor]
    prev_params: list[Tensor] | None  # at the previous record point (None at epoch 0)
    lr: Tensor  # [K_active] lr of the last step taken (lr0 at epoch 0)
    active: Tensor  # [K_active] long
    x_probe: Tensor  # [P, d] a fixed probe batch from the training set
    y_probe: Tensor  # [P]


EpochHook = Callable[[EpochContext], dict[str, Tensor]]


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The data order a member with this seed uses in this epoch (counted across phases)."""
    return np.random.default_rng([int(seed), 0x5EED, epoch]).permutation(n)


def _to_device(a: np.ndarray, device: torch.device, dtype: torch.dtype | None = None) -> Tensor:
    t = torch.from_numpy(np.array(a, copy=True))  # the dataset's arrays are read-only
    return t.to(device=device, dtype=dtype) if dtype else t.to(device)


def _batches(n: int, batch_size: int) -> list[tuple[int, int]]:
    b = n if batch_size <= 0 or batch_size >= n else batch_size
    return [(i, min(i + b, n)) for i in range(0, n, b)]  # the last batch may be partial


def _clip(grads: list[Tensor], max_norm: Tensor) -> list[Tensor]:
    """Per-member global-norm clipping (torch.nn.utils.clip_grad_norm_ semantics)."""
    sq = sum(g.flatten(1).pow(2).sum(1) for g in grads)
    scale = (max_norm / (sq.sqrt() + 1e-6)).clamp(max=1.0)
    scale = torch.where(max_norm > 0, scale, torch.ones_like(scale))
    return [g * scale.view(-1, *([1] * (g.dim() - 1))) for g in grads]


class _Recorder:
    """Per-member history lists; non-finite values are stored as None (no NaN leaves here)."""

    def __init__(self, k: int) -> None:
        self.hist: list[dict[str, list[float | None]]] = [{} for _ in range(k)]

    def add(self, idx: Sequence[int], epoch: int, values: dict[str, Tensor | float]) -> None:
        cols = {k: (v.tolist() if isinstance(v, Tensor) else [v] * len(idx))
                for k, v in values.items()}
        for j, m in enumerate(idx):
            h = self.hist[m]
            n = len(h.setdefault("epoch", []))
            h["epoch"].append(epoch)
            for k in (set(h) | set(cols)) - {"epoch"}:
                col = h.setdefault(k, [None] * n)  # a key first seen now: earlier epochs None
                x = cols[k][j] if k in cols else None
                col.append(x if x is not None and math.isfinite(x) else None)


def run_cohort(
    cohort: Cohort,
    data: Dataset,
    run: RunSpec | None = None,
    hooks: Sequence[EpochHook] = (),
    progress: Callable[[int], None] | None = None,
) -> list[MemberRun]:
    """Train every member of the cohort; return one MemberRun per member, in cohort order."""
    run = run or RunSpec()
    device = torch.device(run.device)
    dtype = torch.float64 if run.dtype == "float64" else torch.float32
    members = cohort.members
    K = len(members)
    first = members[0]
    arch = nets.arch_for(first.model, data.X_train.shape[1], data.n_classes)
    t0 = time.perf_counter()

    # data on the device once: x [n, d], y [n]
    x_tr = _to_device(data.X_train, device, dtype)
    y_tr = _to_device(data.y_train, device)
    x_va = _to_device(data.X_val, device, dtype)
    y_va = _to_device(data.y_val, device)
    x_all = torch.cat([x_tr, x_va])
    y_all = torch.cat([y_tr, y_va])
    n, n_tr = x_tr.shape[0], x_tr.shape[0]
    x_probe, y_probe = x_tr[:512], y_tr[:512]

    params = nets.init_params(arch, [m.model for m in members], [m.seed for m in members],
                              device, dtype)
    active = torch.arange(K, device=device)
    idx_list = list(range(K))
    rec = _Recorder(K)
    runs = [MemberRun(m) for m in members]
    lr_steps: list[list[float]] = [[] for _ in range(K)]
    prev_params: list[Tensor] | None = None
    last_lr = torch.tensor([m.train.lr for m in members], device=device, dtype=dtype)

    def record(epoch: int, extra: dict[str, Tensor | float]) -> Tensor:
        nonlocal prev_params
        values: dict[str, Tensor | float] = {}
        tr_loss, tr_acc, va_loss, va_acc = _eval_split(params, x_all, y_all, n_tr, arch)
        values.update(train_loss=tr_loss, train_acc=tr_acc)
        if va_loss is not None:
            values.update(val_loss=va_loss, val_acc=va_acc)
        values.update(extra)
        ctx = EpochContext(epoch, arch, params, prev_params, last_lr, active, x_probe, y_probe)
        for hook in hooks:
            try:
                values.update(hook(ctx))
            except Exception as exc:  # name the probe and the event (STYLE 10)
                raise RuntimeError(f"probe {getattr(hook, '__name__', hook)!r} failed at "
                                   f"epoch {epoch}: {exc}") from exc
        rec.add(idx_list, epoch, values)
        if hooks:  # only probes look at the previous weights
            prev_params = [p.clone() for p in params]
        return tr_loss

    start_loss = record(0, {"lr": last_lr})
    threshold = DIVERGE_FACTOR * start_loss.clamp_min(DIVERGE_FLOOR)

    phases: list[tuple[int, list[TrainSpec]]] = [(0, [m.train for m in members])]
    phases += [(p + 1, [m.phases[p] for m in members]) for p in range(len(first.phases))]
    epoch = 0
    for phase, trains in phases:
        t = trains[0]
        bounds = _batches(n, t.batch_size)
        shared_batch = len(bounds) == 1  # full batch: order is irrelevant, share x across members
        hp_full = optim.hyperparams(trains, device, dtype)
        hp = optim.compact_hp(hp_full, active)
        opt = optim.make(t.optimizer, hp)
        state = opt.init(params)
        lr0 = torch.tensor([tr.lr for tr in trains], device=device, dtype=dtype)
        sched = schedules.make(t.schedule, lr0, dict(t.schedule_args), len(bounds), t.epochs)
        clip = torch.tensor([tr.clip_norm for tr in trains], device=device, dtype=dtype)
        clipping = any(tr.clip_norm > 0 for tr in trains)
        step = 0
        for e in range(t.epochs):
            epoch += 1
            if not idx_list:
                break
            if shared_batch:
                order = None
            elif t.shuffle:
                order = _to_device(np.stack([epoch_order(members[m].seed, epoch, n)
                                             for m in idx_list]), device)
            else:
                order = torch.arange(n, device=device).expand(len(idx_list), n)
            gather_all = order is not None and \
                len(idx_list) * n * x_tr.shape[1] * x_tr.element_size() <= GATHER_BYTES
            if gather_all:
                xe, ye = x_tr[order], y_tr[order]  # [K, n, d], [K, n]
            run_loss = torch.zeros(len(idx_list), device=device, dtype=dtype)
            epoch_lrs: list[Tensor] = []
            for lo, hi in bounds:
                lr = sched(step, e)[active]  # [K_active]
                if order is None:
                    xb, yb = x_tr, y_tr  # [n, d] shared
                elif gather_all:
                    xb, yb = xe[:, lo:hi], ye[:, lo:hi]  # [K, B, d] views
                else:
                    sel = order[:, lo:hi]
                    xb, yb = x_tr[sel], y_tr[sel]
                loss, _, grads = nets.loss_and_grads(params, xb, yb, arch)
                if clipping:
                    grads = _clip(grads, clip[active])
                updates, state = opt.update(grads, state, params, lr)
                torch._foreach_add_(params, updates)
                run_loss += loss * (hi - lo)
                step += 1
                epoch_lrs.append(lr)
            for j, col in enumerate(torch.stack(epoch_lrs, 1).tolist()):  # one sync per epoch
                lr_steps[idx_list[j]].extend(col)
            last_lr = lr
            tr_loss = record(epoch, {"lr": lr, "batch_loss": run_loss / n, "phase": float(phase)})
            if hasattr(sched, "observe"):
                metric = rec_metric(rec, idx_list, K, device, dtype)
                sched.observe(metric)
            bad = ~torch.isfinite(tr_loss) | (tr_loss > threshold[active])
            if bool(bad.any()):
                for j in torch.nonzero(bad).flatten().tolist():
                    m = idx_list[j]
                    runs[m].status, runs[m].diverged_epoch = "diverged", epoch
                    runs[m].params = [p[j].detach().cpu().numpy().copy() for p in params]
                    if progress:
                        progress(_remaining(trains, phases, phase, e))
                keep = torch.nonzero(~bad).flatten()
                params = [p[keep].contiguous() for p in params]
                state = optim.compact(state, keep)
                active = active[keep]
                idx_list = active.tolist()
                opt = optim.make(t.optimizer, optim.compact_hp(hp_full, active))
                prev_params = [p[keep] for p in prev_params] if prev_params else None
                last_lr = last_lr[keep]
            if progress:
                progress(len(idx_list))
    for j, m in enumerate(idx_list):
        runs[m].params = [p[j].detach().cpu().numpy().copy() for p in params]
    seconds = time.perf_counter() - t0
    for m, r in enumerate(runs):
        r.history = rec.hist[m]
        r.steps = {"lr": lr_steps[m]}
        r.seconds = seconds / K
    return runs


def rec_metric(rec: _Recorder, idx: list[int], k: int, device: torch.device,
               dtype: torch.dtype) -> Tensor:
    """Full-K metric for a stateful schedule: val loss (train loss without a val set)."""
    out = torch.full((k,), math.inf, device=device, dtype=dtype)
    for m in idx:
        h = rec.hist[m]
        v = (h.get("val_loss") or h["train_loss"])[-1]
        out[m] = math.inf if v is None else v
    return out


def _remaining(trains: list[TrainSpec], phases: list[Any], phase: int, e: int) -> int:
    """Member-epochs a member frozen now will not run (for the progress bar)."""
    later = sum(tr[0].epochs for p, tr in phases if p > phase)
    return trains[0].epochs - e - 1 + later


def _eval_split(params: list[Tensor], x_all: Tensor, y_all: Tensor, n_tr: int, arch: nets.Arch
                ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """Train and val loss/accuracy from one batched forward over both sets."""
    with torch.no_grad():
        K = params[0].shape[0]
        step = max(1, (1 << 22) // max(1, K * max(arch.sizes)))
        losses, corrects = [], []
        for i in range(0, x_all.shape[0], step):
            z, _ = nets.forward(params, x_all[i : i + step], arch)
            loss, correct, _ = nets.loss_terms(z, y_all[i : i + step], arch)
            losses.append(loss)
            corrects.append(correct)
        loss = torch.cat(losses, 1)
        correct = torch.cat(corrects, 1).to(loss.dtype)
    tr = (loss[:, :n_tr].mean(1), correct[:, :n_tr].mean(1))
    if x_all.shape[0] == n_tr:
        return tr[0], tr[1], None, None
    return tr[0], tr[1], loss[:, n_tr:].mean(1), correct[:, n_tr:].mean(1)
