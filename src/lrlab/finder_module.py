"""The range test for a user's own `torch.nn.Module`: K seeds as one cohort through torch.func.

The seeds are K re-initialised copies of the module (seed s: `torch.manual_seed(s)`, then
`reset_parameters()` on every submodule that has one), stacked with
`torch.func.stack_module_state`; one step is a `vmap(functional_call)` forward over the members,
one autograd backward of the summed losses (member k's loss depends on its own slice of the
stacked weights only, so that is every member's own gradient; ~1.6x faster here than
`vmap(grad(...))`), and lrlab's batched optimizer (`optim`) with the ramp lr as a `[K]`
tensor. Every member sees the same batches from the user's loader. A module vmap cannot batch
(dropout and other random ops, `.item()`, data-dependent control flow) falls back to one
member at a time (still one backward), with a one-line notice; each member then draws its
randomness from its own seed and step.

The user's module, optimizer and torch's global RNG are left as they were: the copies are made
inside `torch.random.fork_rng`, and the module's state_dict and train/eval modes (and the
optimizer's state, if it changed) are restored in a `finally`.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.func import functional_call, stack_module_state, vmap

from lrlab import finder, optim
from lrlab.errors import LrlabError, bad_value
from lrlab.spec import OPTIMIZERS, TrainSpec

Tensor = torch.Tensor


# ----------------------------------------------------------------------------- optimizer


def train_spec(optimizer: Any) -> TrainSpec:
    """An optimizer name or a torch.optim object as the TrainSpec lrlab's `optim` reads.

    A torch optimizer contributes its class and its first param group's settings (not its lr).
    """
    if optimizer is None:
        optimizer = "adam"
    if isinstance(optimizer, str):
        if optimizer not in OPTIMIZERS:
            raise bad_value("optimizer", optimizer, "one of " + ", ".join(OPTIMIZERS))
        if optimizer in ("momentum", "nesterov"):  # torch.optim.SGD with momentum 0.9
            return TrainSpec(optimizer="sgd", momentum=0.9, nesterov=optimizer == "nesterov")
        return TrainSpec(optimizer=optimizer)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise bad_value("optimizer", type(optimizer).__name__,
                        "an optimizer name or a torch.optim optimizer object")
    g = optimizer.param_groups[0]
    name = type(optimizer).__name__
    if g.get("maximize") or g.get("amsgrad"):
        raise LrlabError(f"`optimizer` {name} with maximize/amsgrad is not supported; use the "
                         "plain variant")
    wd, eps = float(g.get("weight_decay", 0.0)), g.get("eps")
    if isinstance(optimizer, torch.optim.SGD):
        return TrainSpec(optimizer="sgd", momentum=float(g["momentum"]),
                         dampening=float(g["dampening"]), nesterov=bool(g["nesterov"]),
                         weight_decay=wd)
    if isinstance(optimizer, (torch.optim.AdamW, torch.optim.Adam)):
        b1, b2 = g["betas"]
        return TrainSpec(optimizer="adamw" if isinstance(optimizer, torch.optim.AdamW)
                         else "adam", beta1=float(b1), beta2=float(b2), eps=float(eps),
                         weight_decay=wd)
    if isinstance(optimizer, torch.optim.Adagrad):
        return TrainSpec(optimizer="adagrad", lr_decay=float(g["lr_decay"]), weight_decay=wd,
                         initial_accumulator_value=float(g["initial_accumulator_value"]),
                         eps=float(eps))
    if isinstance(optimizer, torch.optim.RMSprop):
        return TrainSpec(optimizer="rmsprop", alpha=float(g["alpha"]), eps=float(eps),
                         weight_decay=wd, momentum=float(g["momentum"]),
                         centered=bool(g["centered"]))
    raise bad_value("optimizer", name, "torch.optim SGD, Adagrad, RMSprop, Adam or AdamW "
                    "(or one of " + ", ".join(OPTIMIZERS) + ")")


# ----------------------------------------------------------------------------- the user's state


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return (isinstance(a, Tensor) and isinstance(b, Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and bool(torch.equal(a, b)))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _own_rng() -> contextlib.AbstractContextManager[None]:
    """torch's global RNG (and CUDA's, if in use) restored on exit."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    return torch.random.fork_rng(devices=devices)


@contextlib.contextmanager
def preserved(model: torch.nn.Module, optimizer: Any = None) -> Iterator[None]:
    """Leave the module (state_dict, train/eval modes), the optimizer and the RNG as found."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    opt_state = copy.deepcopy(optimizer.state_dict()) \
        if isinstance(optimizer, torch.optim.Optimizer) else None
    with _own_rng():
        try:
            yield
        finally:
            with torch.no_grad():
                model.load_state_dict(state)  # in place: the same tensors, the same bits
            for m, mode in zip(model.modules(), modes):
                m.training = mode
            if opt_state is not None and not _same(optimizer.state_dict(), opt_state):
                optimizer.load_state_dict(opt_state)


# ----------------------------------------------------------------------------- the cohort


def _xy(batch: Any, device: torch.device) -> tuple[Any, Any]:
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise LrlabError("each batch of the loader must be (inputs, targets); got "
                         f"{type(batch).__name__}")
    x, y = batch[0], batch[1]
    return (x.to(device) if isinstance(x, Tensor) else x,
            y.to(device) if isinstance(y, Tensor) else y)


class _Batches:
    """The loader's batches, restarting it when it runs out (several epochs if need be)."""

    def __init__(self, loader: Any, device: torch.device, name: str) -> None:
        self.loader, self.device, self.name = loader, device, name
        self.it: Iterator[Any] | None = None
        self.count = 0  # batches taken so far

    def next(self) -> tuple[Any, Any]:
        for _ in range(2):
            if self.it is None:
                if self.count and isinstance(self.loader, Iterator):
                    raise one_shot_error(self.name, self.loader, self.count)
                self.it = iter(self.loader)
            try:
                batch = next(self.it)
            except StopIteration:
                self.it = None
                continue
            self.count += 1
            return _xy(batch, self.device)
        raise LrlabError(f"`{self.name}` yields no batches")


def one_shot_error(name: str, loader: Any, count: int | None = None) -> LrlabError:
    """A loader that is an iterator (a generator, `iter(...)`) runs out for good."""
    ran = f"ran out after {count} batches and " if count else ""
    return LrlabError(
        f"`{name}` is a {type(loader).__name__}, an iterator that {ran}cannot be iterated "
        "again; the range test restarts its loaders (and evaluates val_loader after every "
        "step): pass a torch DataLoader or a list of (inputs, targets) batches")


def reinit(model: torch.nn.Module, seed: int, device: torch.device) -> tuple[torch.nn.Module,
                                                                            bool]:
    """A copy of `model` re-initialised from `seed`: manual_seed, then reset_parameters() on
    every submodule that has it, in `modules()` order. Also: whether any submodule had it."""
    c = copy.deepcopy(model).to(device)
    torch.manual_seed(int(seed))
    found = False
    for m in c.modules():
        reset = getattr(m, "reset_parameters", None)
        if callable(reset):
            reset()
            found = True
    return c.train(), found


class ModuleCohort:
    """K copies of a module as stacked tensors, stepped by vmap (or one by one) + `optim`."""

    def __init__(self, model: torch.nn.Module, loader: Any, loss_fn: Callable[..., Tensor],
                 seeds: Sequence[int], train: TrainSpec, device: torch.device,
                 val_loader: Any = None, notices: list[str] | None = None) -> None:
        self.notices = notices if notices is not None else []
        with _own_rng():  # the loader's shuffling keeps drawing from the caller's RNG
            copies, found = zip(*(reinit(model, s, device) for s in seeds))
        if not any(found):
            self.notices.append("no submodule has reset_parameters(): every seed starts from "
                                "your model's current weights")
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        if not self.names:
            raise LrlabError("the model has no parameter with requires_grad=True to train")
        params, buffers = stack_module_state(list(copies))
        # each [K, ...], leaves of autograd: d(sum_k loss_k)/d p is every member's own gradient
        self.p = [params[n].detach().requires_grad_() for n in self.names]
        self.rest = {n: v.detach() for n, v in params.items() if n not in set(self.names)}
        self.rest.update({n: b.detach() for n, b in buffers.items()})
        self.base = copies[0]
        self.loss_fn, self.device = loss_fn, device
        self.dtype = self.p[0].dtype
        self.batches = _Batches(loader, device, "train_loader")
        self.val_loader = val_loader
        self.seeds, self.t = list(seeds), 0
        k = len(seeds)
        self.opt = optim.make(train.optimizer, optim.hyperparams([train] * k, device, self.dtype))
        with torch.no_grad():
            self.state = self.opt.init(self.p)
        self.vloss = vmap(self._loss, in_dims=(0, 0, None, None))
        self.batched: bool | None = None  # decided on the first batch

    def _loss(self, p: dict[str, Tensor], rest: dict[str, Tensor], x: Any, y: Any) -> Tensor:
        out = functional_call(self.base, {**p, **rest}, (x,))
        return self.loss_fn(out, y)

    def _dicts(self, k: int | None = None) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        if k is None:
            return dict(zip(self.names, self.p)), self.rest
        return ({n: v[k] for n, v in zip(self.names, self.p)},
                {n: v[k] for n, v in self.rest.items()})

    def _decide(self, x: Any, y: Any) -> None:
        """Batch with vmap if the module allows it (tried on throw-away buffers)."""
        p0, r0 = self._dicts(0)
        with torch.no_grad():
            out = self._loss(p0, {n: v.clone() for n, v in r0.items()}, x, y)
        if not isinstance(out, Tensor) or out.dim() != 0:
            raise LrlabError("`loss_fn(outputs, targets)` must return one number (a scalar "
                             "tensor, e.g. a mean); got shape "
                             f"{tuple(getattr(out, 'shape', ()))}")
        try:
            self._backward(self.vloss(self._dicts()[0], {n: v.clone() for n, v in
                                                         self.rest.items()}, x, y))
            self.batched = True
        except Exception as exc:  # vmap cannot batch this module: one member at a time
            self.batched = False
            msg = str(exc).strip().splitlines()[0][:80] if str(exc).strip() else ""
            note = (f"torch.func.vmap cannot batch {type(self.base).__name__} ("
                    f"{type(exc).__name__}: {msg}); running the {len(self.seeds)} seeds one "
                    "at a time")
            self.notices.append(note)

    def _member_seed(self, k: int) -> int:
        return (self.seeds[k] * 1_000_003 + self.t) % (2**63)

    def _losses(self, x: Any, y: Any) -> Tensor:
        """Each member's loss [K] on (x, y): one vmapped forward, or one member at a time."""
        if self.batched:
            return self.vloss(*self._dicts(), x, y)
        out = []
        for k in range(len(self.seeds)):
            with _own_rng():  # member k's randomness from its seed and step alone
                torch.manual_seed(self._member_seed(k))
                out.append(self._loss(*self._dicts(k), x, y))
        return torch.stack(out)

    def _backward(self, losses: Tensor) -> list[Tensor]:
        """Per-member gradients from one backward pass: member k's loss only reaches p[k]."""
        grads = torch.autograd.grad(losses.sum(), self.p, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, self.p)]

    def mean_loss(self, loader: Any) -> Tensor:
        """Mean loss [K] over a whole loader, in eval mode (no dropout, BN running stats)."""
        self.base.eval()
        try:
            total, count = None, 0
            with torch.no_grad():
                for batch in loader:
                    x, y = _xy(batch, self.device)
                    n = int(x.shape[0]) if isinstance(x, Tensor) else 1
                    loss = self._losses(x, y) * n
                    total = loss if total is None else total + loss
                    count += n
        finally:
            self.base.train()
        if total is None:
            raise LrlabError("`val_loader` yields no batches")
        return total / count

    def step(self, lr: Tensor | None) -> Tensor:
        x, y = self.batches.next()
        if self.batched is None:
            with _own_rng():
                self._decide(x, y)
        measured = self.mean_loss(self.val_loader) if self.val_loader is not None else None
        if lr is None:
            with torch.no_grad():
                loss = measured if measured is not None else self._losses(x, y)
        else:
            loss = self._losses(x, y)
            grads = self._backward(loss)
            with torch.no_grad():
                updates, self.state = self.opt.update(grads, self.state, self.p, lr)
                torch._foreach_add_(self.p, updates)
            loss = measured if measured is not None else loss
        self.t += 1
        return loss.detach()

    def keep(self, idx: list[int]) -> None:
        keep = torch.tensor(idx, device=self.device)
        self.p = [v.detach()[keep].requires_grad_() for v in self.p]
        self.rest = {n: v[keep] for n, v in self.rest.items()}
        self.state = optim.compact(self.state, keep)
        self.seeds = [self.seeds[i] for i in idx]


# ----------------------------------------------------------------------------- entry point


def _device_of(model: torch.nn.Module) -> torch.device:
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def check_device(device: Any) -> torch.device:
    """`device` as a torch.device this process can use; LrlabError naming it otherwise."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise bad_value("device", device, "a torch device, e.g. cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise bad_value("device", str(device), "cpu on this machine (no CUDA device found)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise bad_value("device", str(device), f"a CUDA device below cuda:"
                        f"{torch.cuda.device_count()} (this machine has "
                        f"{torch.cuda.device_count()})")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None)
                                  and torch.backends.mps.is_available()):
        raise bad_value("device", str(device), "cpu on this machine (no MPS device found)")
    return dev


def check_start_loss(curves: Sequence[finder.SeedCurve], val: bool) -> None:
    """A loss that is NaN or Inf before any step (at every seed) is a data or loss_fn problem,
    which no learning rate can fix: say so instead of suggesting a lower start_lr."""
    if curves and not any(math.isfinite(c.start_loss) for c in curves):
        where = "val_loader" if val else "the first batch of train_loader"
        raise LrlabError(
            f"the loss is {curves[0].start_loss} on {where} before any training step, for "
            f"every seed: no learning rate can fix that; check the data for NaN/Inf (inputs "
            "and targets), the targets' range for loss_fn, and the model's output")
    firsts = [c.raw[0] for c in curves if len(c.raw)]
    if curves and len(firsts) == len(curves) and not any(map(math.isfinite, firsts)):
        raise LrlabError(
            f"the loss is {firsts[0]} after the first step (lr={curves[0].lr[0]:g}) for every "
            "seed, from a finite start: the first gradients or the next batch hold NaN/Inf; "
            "check the data for NaN/Inf (inputs and targets) and loss_fn, or lower start_lr")


def find_module(model: torch.nn.Module, loader: Any, loss_fn: Callable[..., Tensor],
                s: finder.Settings, seeds: Sequence[int], optimizer: Any = None,
                val_loader: Any = None, check: bool = True, epochs: int | None = None,
                device: Any = None) -> finder.FindResult:
    """The range test of `find_lr` for a module (see there)."""
    t0 = time.perf_counter()
    train = train_spec(optimizer)
    dev = check_device(device) if device is not None else _device_of(model)
    if val_loader is not None and isinstance(val_loader, Iterator):
        raise one_shot_error("val_loader", val_loader)
    notices: list[str] = []
    with preserved(model, optimizer):
        cohort = ModuleCohort(model, loader, loss_fn, seeds, train, dev, val_loader, notices)
        curves = finder.run_ramp(cohort, seeds, s, dev, cohort.dtype)
        check_start_loss(curves, val_loader is not None)
        if cohort.batched is False:
            warnings.warn("lrlab.find_lr: " + notices[-1], stacklevel=3)
        result = finder.finish(curves, s, train.optimizer, t0)
        if check and not finder.candidates(result.suggestions):
            notices.append("nothing to check: no rule suggested a learning rate")
        elif check and not _sized(loader):
            notices.append("no check: it counts epochs in batches and the train_loader has "
                           "no length (pass check=False to skip it quietly)")
        elif check:
            result.check = check_module(model, loader, loss_fn, result.suggestions, seeds,
                                        train, dev, val_loader, epochs, notices)
    result.notices = list(dict.fromkeys(notices + result.notices))
    result.seconds = time.perf_counter() - t0
    return result


def check_module(model: torch.nn.Module, loader: Any, loss_fn: Callable[..., Tensor],
                 sugg: dict[str, finder.Suggestion], seeds: Sequence[int], train: TrainSpec,
                 device: torch.device, val_loader: Any, epochs: int | None,
                 notices: list[str]) -> finder.Check:
    """Every candidate lr x every seed as one cohort, trained at a constant lr, then measured
    on the whole validation loader (or the training loader without one)."""
    cands = finder.candidates(sugg)
    if not cands:
        raise LrlabError("nothing to check: no rule suggested a learning rate")
    try:
        spe = len(loader)
    except TypeError:
        raise LrlabError("check=True needs a train_loader with a length (epochs are counted "
                         "in batches)") from None
    ep = finder.check_epochs(spe, epochs)
    lrs = list(dict.fromkeys(lr for _, _, lr in cands))
    member_seeds = [sd for _ in lrs for sd in seeds]
    cohort = ModuleCohort(model, loader, loss_fn, member_seeds, train, device, None, notices)
    lr = torch.tensor([v for v in lrs for _ in seeds], device=device, dtype=cohort.dtype)
    for _ in range(ep * spe):
        cohort.step(lr)
    final = cohort.mean_loss(val_loader if val_loader is not None else loader).tolist()
    finals = {v: [x if math.isfinite(x) else None for x in final[i * len(seeds):
                                                                 (i + 1) * len(seeds)]]
              for i, v in enumerate(lrs)}
    metric = "val_loss" if val_loader is not None else "train_loss"
    return finder.Check(metric, ep, finder.check_rows(cands, finals, None))


def _sized(loader: Any) -> bool:
    """Whether `len(loader)` works (a DataLoader over an IterableDataset has no length)."""
    try:
        len(loader)
    except TypeError:
        return False
    return True
