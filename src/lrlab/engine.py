"""The cohort loop: K members of one architecture trained at once on their own data orders.

One step reads top to bottom (STYLE 8): lr, batch, forward+backward, clip, update. After each
epoch: evaluate train and val in one batched forward, record, run the probe hooks, freeze and
drop (compact) members that diverged. Members never see each other: each has its own init and
data order derived from its seed alone, so a member's curve does not depend on its cohort.

The parameters live in a `nets.Stack` (one flat [K, P] tensor). On the CPU its steps run in
the compiled kernel (nets_kernel.c); with plain SGD and no clipping a whole epoch of steps is
one kernel call (same update, p + grad * (-lr), done in C), otherwise each step's gradients
come from the kernel (or torch) and the optimizer updates the flat tensor in one go.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lrlab import nets, optim, schedules
from lrlab.data import Dataset
from lrlab.spec import Cohort, Member, RunSpec, TrainSpec, shuffle_mode

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
    opt_state: Any = None  # the optimizer's state (optim.State) after the last step, if any


EpochHook = Callable[[EpochContext], dict[str, Tensor]]


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The data order a member with this seed uses in this epoch (counted across phases)."""
    return np.random.default_rng([int(seed), 0x5EED, epoch]).permutation(n)


def epoch_orders(seeds: Sequence[int], epoch: int, n: int) -> np.ndarray:
    """`epoch_order` of several seeds at once: [len(seeds), n] int64. The compiled kernel
    library carries a copy of numpy's generator (checked against numpy before it is used);
    numpy itself otherwise."""
    lib = _orders_lib()
    if lib is None or not all(0 <= int(s) < 2**63 for s in seeds):
        return np.stack([epoch_order(s, epoch, n) for s in seeds]).astype(np.int64, copy=False)
    s = np.asarray([int(v) for v in seeds], dtype=np.int64)
    out = np.empty((len(s), n), dtype=np.int64)
    lib.lr_epoch_orders(s.ctypes.data, len(s), int(epoch), n, out.ctypes.data)
    return out


def member_orders(seeds: Sequence[int], modes: Sequence[str], epoch: int, n: int
                  ) -> np.ndarray:
    """The orders of one epoch, [len(seeds), n] int64, each member by its own shuffle mode:
    `epoch` its `epoch_order` of this epoch, `once` its order of epoch 1 (drawn once, reused
    every epoch), `none` 0..n-1. Orders depend on the member alone, so members with different
    modes can train in one cohort."""
    if all(m == "epoch" for m in modes):
        return epoch_orders(seeds, epoch, n)
    out = np.empty((len(seeds), n), dtype=np.int64)
    for mode, ep in (("epoch", epoch), ("once", 1)):
        rows = [i for i, m in enumerate(modes) if m == mode]
        if rows:
            out[rows] = epoch_orders([seeds[i] for i in rows], ep, n)
    rows = [i for i, m in enumerate(modes) if m == "none"]
    out[rows] = np.arange(n, dtype=np.int64)
    return out


@functools.cache
def _orders_lib() -> Any:
    lib = nets.kernel_lib()
    if lib is None:
        return None
    cases = [(0, 1, 10), (12345, 7, 1000), (2**40 + 3, 2**33, 77), (5, 0, 1)]
    for seed, epoch, n in cases:
        out = np.empty((1, n), dtype=np.int64)
        lib.lr_epoch_orders(np.array([seed], dtype=np.int64).ctypes.data, 1, epoch, n,
                            out.ctypes.data)
        if not np.array_equal(out[0], epoch_order(seed, epoch, n)):
            return None
    return lib


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
    """Per-member history lists; non-finite values are stored as None (no NaN leaves here).

    Each record keeps one float64 array per metric over the members active at that epoch (one
    conversion per metric, not one Python append per member); `histories()` builds the lists
    at the end. Members only ever leave (divergence), so member m's records are a prefix."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.keys: list[str] = []  # every metric seen so far, in first-seen order
        self.records: list[tuple[np.ndarray, int, dict[str, np.ndarray]]] = []
        self.latest: dict[str, np.ndarray] = {}  # [K] each member's last value (NaN: none)
        self.count = np.zeros(k, dtype=np.int64)  # records per member

    def add(self, idx: Sequence[int], epoch: int, values: dict[str, Tensor | float]) -> None:
        ids = np.asarray(idx, dtype=np.int64)
        cols = {k: (v.detach().to("cpu", torch.float64).numpy().reshape(len(ids))
                    if isinstance(v, Tensor) else np.full(len(ids), float(v)))
                for k, v in values.items()}
        self.keys += [k for k in cols if k not in self.keys]
        for k, col in cols.items():
            self.latest.setdefault(k, np.full(self.k, np.nan))[ids] = col
        for k in self.latest.keys() - cols.keys():
            self.latest[k][ids] = np.nan
        self.records.append((ids, epoch, cols))
        self.count[ids] += 1

    def histories(self) -> list[dict[str, list[float | None]]]:
        """{"epoch": [...], metric: [...]} per member; None where a value is missing or not
        finite (a metric first seen later is None at the earlier epochs)."""
        R = len(self.records)
        epochs = np.full((R, self.k), -1, dtype=np.int64)
        mats = {k: np.full((R, self.k), np.nan) for k in self.keys}
        for r, (ids, epoch, cols) in enumerate(self.records):
            epochs[r, ids] = epoch
            for k, col in cols.items():
                mats[k][r, ids] = col
        out = []
        for m in range(self.k):
            n = int(self.count[m])
            h: dict[str, list[float | None]] = {"epoch": epochs[:n, m].tolist()}
            for k in self.keys:
                col = mats[k][:n, m]
                finite = np.isfinite(col)
                h[k] = col.tolist() if finite.all() else \
                    [v if ok else None for v, ok in zip(col.tolist(), finite.tolist())]
            out.append(h)
        return out


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
    arch = nets.arch_for(cohort.first.model, data.X_train.shape[1], data.n_classes)
    kernel = nets.kernel_for(arch, device, dtype)
    # With the kernel, the step's torch ops are small elementwise updates: one thread does
    # them fastest, and a second thread waiting on a busy neighbour slows them 10-40x
    # (notes/perf.md).
    before = torch.get_num_threads()
    if kernel is not None:
        kernel.threads = before  # the kernel splits its members over that many threads
        torch.set_num_threads(1)
    # A net driven into saturation (seed 003: sigmoids broken by lr 300) makes float32
    # gradients denormal, which the CPU computes 3-10x slower; flushed to zero they change no
    # result (mnist-break-recover: same accuracies, 3x faster). Off again afterwards.
    flushed = device.type == "cpu" and torch.set_flush_denormal(True)
    try:
        return _run(cohort, data, run, hooks, progress, arch, kernel, device, dtype)
    finally:
        torch.set_num_threads(before)
        if flushed:
            torch.set_flush_denormal(False)


def _run(cohort: Cohort, data: Dataset, run: RunSpec, hooks: Sequence[EpochHook],
         progress: Callable[[int], None] | None, arch: nets.Arch, kernel: nets.Kernel | None,
         device: torch.device, dtype: torch.dtype) -> list[MemberRun]:
    members = cohort.members
    K = len(members)
    first = members[0]
    t0 = time.perf_counter()

    # data on the device once: x [n, d], y [n]; train and val rows together for evaluation
    x_tr = _to_device(data.X_train, device, dtype)
    y_tr = _to_device(data.y_train, device).long()
    x_va = _to_device(data.X_val, device, dtype)
    y_va = _to_device(data.y_val, device).long()
    x_all = torch.cat([x_tr, x_va])
    y_all = torch.cat([y_tr, y_va])
    n, n_tr = x_tr.shape[0], x_tr.shape[0]
    x_probe, y_probe = x_tr[:512], y_tr[:512]

    net = nets.Stack(arch, nets.init_params(arch, [m.model for m in members],
                                            [m.seed for m in members], device, dtype),
                     x_tr, y_tr, kernel, GATHER_BYTES)
    active = torch.arange(K, device=device)
    idx_list = list(range(K))
    rec = _Recorder(K)
    runs = [MemberRun(m) for m in members]
    lr_steps: list[list[float]] = [[] for _ in range(K)]
    prev_params: list[Tensor] | None = None
    last_lr = torch.tensor([m.train.lr for m in members], device=device, dtype=dtype)
    state: Any = None  # the optimizer state of the current phase (probes read it)

    def record(epoch: int, extra: dict[str, Tensor | float]) -> Tensor:
        nonlocal prev_params
        values: dict[str, Tensor | float] = {}
        tr_loss, tr_acc, va_loss, va_acc = net.evaluate(x_all, y_all, n_tr)
        values.update(train_loss=tr_loss, train_acc=tr_acc)
        if va_loss is not None:
            values.update(val_loss=va_loss, val_acc=va_acc)
        values.update(extra)
        if hooks:  # probes get member-major copies (cheap batched matmuls; safe to keep)
            params = [p.clone(memory_format=torch.contiguous_format) for p in net.params]
            ctx = EpochContext(epoch, arch, params, prev_params, last_lr, active, x_probe,
                               y_probe, state)
            for hook in hooks:
                try:
                    values.update(hook(ctx))
                except Exception as exc:  # name the probe and the event (STYLE 10)
                    raise RuntimeError(f"probe {getattr(hook, '__name__', hook)!r} failed at "
                                       f"epoch {epoch}: {exc}") from exc
            prev_params = params  # only probes look at the previous weights
        rec.add(idx_list, epoch, values)
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
        opt = optim.make(t.optimizer, optim.compact_hp(hp_full, active))
        state = _relayout(opt.init([net.flat]), net)
        lr0 = torch.tensor([tr.lr for tr in trains], device=device, dtype=dtype)
        sched = schedules.make(t.schedule, lr0, dict(t.schedule_args), len(bounds), t.epochs)
        clip = torch.tensor([tr.clip_norm for tr in trains], device=device, dtype=dtype)
        clipping = any(tr.clip_norm > 0 for tr in trains)
        # plain SGD (no momentum, no weight decay): p + grad * (-lr), torch.optim.SGD's update;
        # without clipping the kernel runs a whole epoch of it per call
        plain = _plain_sgd(trains)
        whole_epochs = kernel is not None and not clipping and plain
        step = 0
        for e in range(t.epochs):
            epoch += 1
            if not idx_list:
                break
            if shared_batch:
                order = None
            elif all(shuffle_mode(trains[m].shuffle) == "none" for m in idx_list):
                order = torch.arange(n, device=device).expand(len(idx_list), n)
            else:
                order = torch.from_numpy(member_orders(  # a fresh array: no copy on the CPU
                    [members[m].seed for m in idx_list],
                    [shuffle_mode(trains[m].shuffle) for m in idx_list], epoch, n)).to(device)
            net.begin_epoch(order)
            lrs = _epoch_lrs(sched, step, e, len(bounds), active)  # [steps, K_active]
            run_loss = torch.zeros(len(idx_list), device=device, dtype=torch.float64)
            if whole_epochs:
                run_loss += net.sgd_epoch(bounds, lrs)
            for s, (lo, hi) in enumerate([] if whole_epochs else bounds):
                lr = lrs[s]  # [K_active]
                loss, g = net.loss_and_grads(lo, hi)  # summed batch loss [K], grads [K, P]
                if clipping:
                    g = _clip([g], clip[active])[0]
                if plain:  # one fused op instead of the optimizer's four
                    net.flat.addcmul_(g, lr.unsqueeze(1), value=-1)
                else:
                    updates, state = opt.update([g], state, [net.flat], lr)
                    net.flat.add_(updates[0])
                run_loss += loss
            step += len(bounds)
            for j, col in enumerate(lrs.t().tolist()):  # one sync per epoch
                lr_steps[idx_list[j]].extend(col)
            last_lr = lrs[-1]
            tr_loss = record(epoch, {"lr": last_lr, "batch_loss": run_loss / n,  # float64
                                     "phase": float(phase)})
            if hasattr(sched, "observe"):
                metric = rec_metric(rec, idx_list, K, device, dtype)
                sched.observe(metric)
            bad = ~torch.isfinite(tr_loss) | (tr_loss > threshold[active])
            if bool(bad.any()):
                for j in torch.nonzero(bad).flatten().tolist():
                    m = idx_list[j]
                    runs[m].status, runs[m].diverged_epoch = "diverged", epoch
                    runs[m].params = [p[j].detach().cpu().numpy().copy() for p in net.params]
                    if progress:
                        progress(_remaining(trains, phases, phase, e))
                keep = torch.nonzero(~bad).flatten()
                net.keep(keep)
                state = _relayout(optim.compact(state, keep), net)
                active = active[keep]
                idx_list = active.tolist()
                opt = optim.make(t.optimizer, optim.compact_hp(hp_full, active))
                prev_params = [p[keep] for p in prev_params] if prev_params else None
                last_lr = last_lr[keep]
            if progress:
                progress(len(idx_list))
    final = [p.detach().cpu().contiguous().numpy() for p in net.params]  # one copy per array
    for j, m in enumerate(idx_list):
        runs[m].params = [a[j].copy() for a in final]
    seconds = time.perf_counter() - t0
    for m, (r, history) in enumerate(zip(runs, rec.histories())):
        r.history = history
        r.steps = {"lr": lr_steps[m]}
        r.seconds = seconds / K
    return runs


def _plain_sgd(trains: Sequence[TrainSpec]) -> bool:
    """torch.optim.SGD without momentum or weight decay for every member: the update is
    p + grad * (-lr), which the kernel applies itself."""
    return all(optim.FAMILY[t.optimizer] == "sgd" and not t.momentum and not t.weight_decay
               and not t.nesterov for t in trains)


def _epoch_lrs(sched: schedules.Schedule, step: int, epoch: int, steps: int,
               active: Tensor) -> Tensor:
    """The lr of each of the epoch's steps for the active members: [steps, K_active]."""
    lrs = [sched(step + s, epoch) for s in range(steps)]
    if all(v is lrs[0] for v in lrs):  # a per-epoch schedule: one value for the whole epoch
        return lrs[0][active].expand(steps, -1)
    return torch.stack(lrs)[:, active]


def _relayout(state: Any, net: nets.Stack) -> Any:
    """Optimizer buffers shaped like the parameters, copied into the stack's memory layout
    (elementwise updates then run over matching strides)."""
    if isinstance(state, Tensor):
        return net.layout(state) if state.shape == net.flat.shape else state
    if isinstance(state, dict):
        return {k: _relayout(v, net) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_relayout(v, net) for v in state)
    return state


def rec_metric(rec: _Recorder, idx: list[int], k: int, device: torch.device,
               dtype: torch.dtype) -> Tensor:
    """Full-K metric for a stateful schedule: val loss (train loss without a val set) of the
    last record; inf where it is missing or not finite."""
    last = rec.latest["val_loss" if "val_loss" in rec.latest else "train_loss"]
    out = np.full(k, np.inf)
    out[idx] = np.where(np.isfinite(last[idx]), last[idx], np.inf)  # inactive members: inf
    return torch.as_tensor(out, device=device, dtype=dtype)


def _remaining(trains: list[TrainSpec], phases: list[Any], phase: int, e: int) -> int:
    """Member-epochs a member frozen now will not run (for the progress bar)."""
    later = sum(tr[0].epochs for p, tr in phases if p > phase)
    return trains[0].epochs - e - 1 + later
