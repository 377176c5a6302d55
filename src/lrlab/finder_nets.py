"""The range test for lrlab's own MLPs: K seeds as stacked weights (`nets` + `optim`).

Each seed has its own init (`nets.init_member`) and its own batch order (`engine.epoch_order`,
as in a sweep); the ramp lr is a `[K]` tensor. The check runs are a sweep of the find spec
over the candidate lrs x seeds, trained by `engine.run_cohort`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from lrlab.errors import LrlabError, bad_value
from lrlab.finder import (
    Check,
    FindResult,
    Settings,
    Suggestion,
    candidates,
    check_epochs,
    check_rows,
    check_settings,
    finish,
    run_ramp,
)
from lrlab.spec import shuffle_mode

Tensor = torch.Tensor


class NetCohort:
    """K seeds of an lrlab MLP as stacked weights; each seed its own init and batch order."""

    def __init__(self, spec: Any, train: Any, ds: Any, seeds: Sequence[int],
                 device: torch.device, dtype: torch.dtype) -> None:
        from lrlab import engine, nets, optim

        self.engine, self.nets = engine, nets
        k = len(seeds)
        self.arch = nets.arch_for(spec.model, ds.X_train.shape[1], ds.n_classes)
        self.params = nets.init_params(self.arch, [spec.model] * k, seeds, device, dtype)
        self.opt = optim.make(train.optimizer, optim.hyperparams([train] * k, device, dtype))
        self.state = self.opt.init(self.params)
        self.compact = optim.compact
        self.x = torch.from_numpy(np.array(ds.X_train)).to(device=device, dtype=dtype)
        self.y = torch.from_numpy(np.array(ds.y_train)).to(device)
        self.bounds = engine._batches(self.x.shape[0], train.batch_size)
        self.shuffle, self.seeds, self.t = train.shuffle, list(seeds), 0
        self.clip = torch.full((k,), float(train.clip_norm), device=device, dtype=dtype)
        self.order: Tensor | None = None

    def _batch(self) -> tuple[Tensor, Tensor]:
        epoch, b = divmod(self.t, len(self.bounds))
        if len(self.bounds) == 1:
            return self.x, self.y  # full batch: shared by every member, order irrelevant
        if b == 0 or self.order is None:
            n = self.x.shape[0]
            modes = [shuffle_mode(self.shuffle)] * len(self.seeds)
            rows = self.engine.member_orders(self.seeds, modes, epoch + 1, n)
            self.order = torch.from_numpy(rows).to(self.x.device)  # [K, n]
        lo, hi = self.bounds[b]
        sel = self.order[:, lo:hi]
        return self.x[sel], self.y[sel]  # [K, B, d], [K, B]

    def step(self, lr: Tensor | None) -> Tensor:
        xb, yb = self._batch()
        self.t += 1
        if lr is None:
            with torch.no_grad():
                z, _ = self.nets.forward(self.params, xb, self.arch)
                return self.nets.loss_terms(z, yb, self.arch)[0].mean(1)
        loss, _, grads = self.nets.loss_and_grads(self.params, xb, yb, self.arch)
        if bool((self.clip > 0).any()):
            grads = self.engine._clip(grads, self.clip)
        updates, self.state = self.opt.update(grads, self.state, self.params, lr)
        torch._foreach_add_(self.params, updates)
        return loss

    def keep(self, idx: list[int]) -> None:
        keep = torch.tensor(idx, device=self.x.device)
        self.params = [p[keep].contiguous() for p in self.params]
        self.state = self.compact(self.state, keep)
        self.clip = self.clip[keep]
        self.seeds = [self.seeds[i] for i in idx]
        if self.order is not None:
            self.order = self.order[keep]


def _spec_for_find(spec: Any, optimizer: str | None, device: str | None) -> Any:
    from lrlab import runner

    s = runner.as_spec(spec)
    axes = [k for k, _ in s.sweep if k != "lr"]  # the ramp replaces a swept lr
    if axes:
        raise LrlabError(f"a range test runs one configuration; the spec sweeps "
                         f"{', '.join(axes)} (give one value per key)")
    s = replace(s, sweep=())
    if optimizer is not None:
        from lrlab.spec import OPTIMIZERS

        if optimizer not in OPTIMIZERS:
            raise bad_value("optimizer", optimizer, "one of " + ", ".join(OPTIMIZERS))
        s = replace(s, train=replace(s.train, optimizer=optimizer))
    if device is not None:
        s = replace(s, run=replace(s.run, device=device))
    if s.run.device == "cuda" and not torch.cuda.is_available():
        raise bad_value("[run].device", "cuda", "cpu on this machine (no CUDA device found)")
    return replace(s, phases=())


def find_spec(spec: Any, s: Settings, seeds: tuple[int, ...], check: bool = False,
              epochs: int | None = None, optimizer: str | None = None,
              device: str | None = None) -> FindResult:
    """The range test for an lrlab MLP described by a spec (Spec, TOML path or dict)."""
    from lrlab import data, runner
    from lrlab import spec as spec_mod

    t0 = time.perf_counter()
    check_settings(s)
    sp = replace(_spec_for_find(spec, optimizer, device), seeds=seeds)
    members = spec_mod.members(sp)
    ds = data.load(sp.data)
    runner.check_shapes(members[0], ds)
    dev = torch.device(sp.run.device)
    dtype = torch.float64 if sp.run.dtype == "float64" else torch.float32
    train = members[0].train
    cohort = spec_mod.cohorts(sp)[0]
    with runner.threads_for(cohort, ds, sp.run.threads):
        curves = run_ramp(NetCohort(sp, train, ds, seeds, dev, dtype), seeds, s, dev, dtype)
    result = finish(curves, s, train.optimizer, t0)
    if check and candidates(result.suggestions):
        result.check = check_spec(sp, ds, result.suggestions, epochs)
    elif check:
        result.notices.append("nothing to check: no rule suggested a learning rate")
    result.seconds = time.perf_counter() - t0
    return result


def check_spec(sp: Any, ds: Any, sugg: Mapping[str, Suggestion], epochs: int | None) -> Check:
    """Short runs of the find spec (engine.run_cohort) at each candidate lr, all seeds."""
    from lrlab import engine, runner
    from lrlab import spec as spec_mod

    cands = candidates(sugg)
    if not cands:
        raise LrlabError("nothing to check: no rule suggested a learning rate")
    n = ds.X_train.shape[0]
    spe = len(engine._batches(n, sp.train.batch_size))
    ep = check_epochs(spe, epochs)
    lrs = tuple(dict.fromkeys(lr for _, _, lr in cands))
    run_spec = replace(sp, sweep=(("lr", lrs),), train=replace(sp.train, epochs=ep))
    metric = "val_loss" if len(ds.y_val) else "train_loss"
    acc_key = "val_acc" if metric == "val_loss" else "train_acc"
    finals: dict[float, list[float]] = {lr: [] for lr in lrs}
    accs: dict[float, list[float]] = {lr: [] for lr in lrs}
    for c in spec_mod.cohorts(run_spec, sp.run.max_members_per_cohort):
        with runner.threads_for(c, ds, sp.run.threads):
            for r in engine.run_cohort(c, ds, sp.run):
                lr = dict(r.member.values)["lr"]
                ok = r.status == "ok"
                finals[lr].append(r.history[metric][-1] if ok else None)
                accs[lr].append(r.history[acc_key][-1] if ok else None)
    return Check(metric, ep, check_rows(cands, finals, accs))
