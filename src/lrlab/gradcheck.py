"""Check a hand-written backward pass against central finite differences (and autograd).

The user gives three things: ``params`` (a dict name -> array), ``loss(params) -> float`` and
``grads(params) -> dict`` (name -> array of the same shape). Arrays may be numpy arrays or torch
tensors, in any mix. For every array, ``gradcheck`` compares ``grads`` with the central finite
difference of ``loss`` and names the arrays that disagree::

    g_fd[i] = (loss(x + eps * e_i) - loss(x - eps * e_i)) / (2 * eps)

    rel_error = ||g_hand - g_fd|| / max(||g_hand|| + ||g_fd||, tiny)      (per array, 2-norm)

The relative error is the one CS231n recommends, taken over the whole array (over the checked
entries) rather than entry by entry, so a few near-zero entries cannot dominate it. It is 0 for a
perfect match and 1 when one side is zero and the other is not; below about 1e-7 is rounding,
above 1e-2 is a bug. An array is ``ok`` when ``rel_error <= rtol`` or ``max_abs_error <= atol``
(the second clause accepts gradients too small for finite differences to resolve).

Everything runs in float64: ``loss`` and ``grads`` receive float64 copies of the arrays (numpy
stays numpy, a tensor stays a tensor on its device), one entry is perturbed at a time and put
back to its exact original value. The caller's arrays are never written to.

Arrays with more than ``DEFAULT_MAX_ENTRIES`` entries are checked on a seeded random subset of
that many entries (``max_entries`` changes the cap; ``GradRow.checked`` says how many were used),
which costs two ``loss`` calls per checked entry.

When every array is a torch tensor and ``loss`` returns a tensor with a graph, the hand gradients
are also compared with autograd, over all entries (``GradRow.autograd_rel_error``, an extra
column). The ``ok``/``WRONG`` verdict itself comes from finite differences only, which see the
same function the user wrote even where autograd would not (a ``.detach()``, a numpy detour).
"""

from __future__ import annotations

import importlib.util
import math
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from lrlab.errors import LrlabError, bad_value

__all__ = ["DEFAULT_MAX_ENTRIES", "GradRow", "GradcheckResult", "check_file", "gradcheck", "main"]

DEFAULT_MAX_ENTRIES = 2000  # per array: all entries up to this many, else a seeded subset
EXIT_OK = 0
EXIT_WRONG = 3

Array = Any  # a numpy array, a torch tensor, or anything np.asarray accepts
LossFn = Callable[[dict[str, Array]], Any]
GradsFn = Callable[[dict[str, Array]], Mapping[str, Array]]


@dataclass(frozen=True)
class GradRow:
    """The verdict on one parameter array."""

    name: str
    rel_error: float  # ||g_hand - g_fd|| / max(||g_hand|| + ||g_fd||, tiny), checked entries
    max_abs_error: float  # max |g_hand - g_fd| over the checked entries
    ok: bool  # rel_error <= rtol or max_abs_error <= atol
    worst_index: tuple[int, ...]  # the entry with the largest |g_hand - g_fd|
    checked: int = 0  # entries compared (all, or a seeded subset of a large array)
    autograd_rel_error: float | None = None  # hand vs autograd, all entries; None: not available

    def line(self, width: int = 0) -> str:
        """``NAME  rel_error=3.2e-01  [autograd=1.0e-16  ]WRONG``, the name padded to ``width``."""
        parts = [self.name.ljust(width), f"rel_error={self.rel_error:.1e}"]
        if self.autograd_rel_error is not None:
            parts.append(f"autograd={self.autograd_rel_error:.1e}")
        parts.append("ok" if self.ok else "WRONG")
        return "  ".join(parts)


@dataclass(frozen=True)
class GradcheckResult:
    """One row per parameter array, in the order of ``params``."""

    rows: tuple[GradRow, ...]

    @property
    def ok(self) -> bool:
        """True when every array agrees with finite differences."""
        return all(row.ok for row in self.rows)

    @property
    def wrong(self) -> tuple[str, ...]:
        """The names of the arrays that disagree."""
        return tuple(row.name for row in self.rows if not row.ok)

    def lines(self) -> list[str]:
        """One line per array: name, relative error, ``ok`` or ``WRONG``."""
        width = max((len(row.name) for row in self.rows), default=0)
        return [row.line(width) for row in self.rows]


# ----------------------------------------------------------------------------- array helpers


def _float64_copy(value: Array, name: str) -> np.ndarray | torch.Tensor:
    """A contiguous float64 copy: a tensor stays a tensor on its device, anything else numpy."""
    if isinstance(value, torch.Tensor):
        return value.detach().to(dtype=torch.float64, copy=True).contiguous()
    try:
        return np.array(value, dtype=np.float64, copy=True, order="C")
    except (TypeError, ValueError) as exc:
        raise bad_value(f"params[{name!r}]", type(value).__name__, "a numeric array") from exc


def _as_numpy(value: Array, what: str) -> np.ndarray:
    """A float64 numpy copy of an array or tensor, for comparison."""
    if isinstance(value, torch.Tensor):
        value = value.detach().to(device="cpu", dtype=torch.float64).numpy()
    try:
        return np.array(value, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as exc:
        raise bad_value(what, type(value).__name__, "a numeric array") from exc


def _copy_params(work: Mapping[str, np.ndarray | torch.Tensor]) -> dict[str, Any]:
    """Fresh copies, so that nothing the user's functions do can reach our working arrays."""
    return {k: v.clone() if isinstance(v, torch.Tensor) else v.copy() for k, v in work.items()}


def _scalar(value: Any) -> float:
    """The loss as a Python float; one clear sentence when it is not one number."""
    if isinstance(value, torch.Tensor):
        value = value.detach().to(device="cpu", dtype=torch.float64).numpy()
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise bad_value("loss(params)", type(value).__name__, "one number") from exc
    if arr.size != 1:
        raise bad_value("loss(params)", f"an array of shape {arr.shape}", "one number")
    return float(arr.reshape(()))


def _rel_error(hand: np.ndarray, fd: np.ndarray) -> float:
    """||hand - fd|| / max(||hand|| + ||fd||, tiny); 0 when both are zero."""
    denom = max(float(np.linalg.norm(hand) + np.linalg.norm(fd)), np.finfo(np.float64).tiny)
    return float(np.linalg.norm(hand - fd)) / denom


def _check_grads(got: Any, work: Mapping[str, np.ndarray | torch.Tensor]) -> dict[str, np.ndarray]:
    """The hand gradients as float64 numpy, with names and shapes matching ``params``."""
    if not isinstance(got, Mapping):
        raise bad_value("grads(params)", type(got).__name__, "a dict name -> array")
    missing = [k for k in work if k not in got]
    if missing:
        raise LrlabError(f"grads(params) has no gradient for {', '.join(map(repr, missing))}")
    extra = [k for k in got if k not in work]
    if extra:
        raise LrlabError(
            f"grads(params) has {', '.join(map(repr, extra))}, which is not in params "
            f"(params has {', '.join(map(repr, work))})"
        )
    out: dict[str, np.ndarray] = {}
    for name, param in work.items():
        grad = _as_numpy(got[name], f"grads(params)[{name!r}]")
        if grad.shape != tuple(param.shape):
            raise LrlabError(
                f"grads(params)[{name!r}] has shape {grad.shape} but params[{name!r}] has "
                f"shape {tuple(param.shape)}"
            )
        out[name] = grad
    return out


def _entries(size: int, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Flat indices to check: all of them, or a sorted seeded subset of ``cap``."""
    if size <= cap:
        return np.arange(size)
    return np.sort(rng.choice(size, size=cap, replace=False))


def _autograd(loss: LossFn, work: Mapping[str, Any]) -> dict[str, np.ndarray] | None:
    """Autograd's gradient of ``loss``, or None when the params or the loss are not torch."""
    if not all(isinstance(v, torch.Tensor) for v in work.values()):
        return None
    leaves = {k: v.clone().requires_grad_(True) for k, v in work.items()}
    try:
        out = loss(leaves)
        if not (isinstance(out, torch.Tensor) and out.requires_grad and out.numel() == 1):
            return None
        found = torch.autograd.grad(out.reshape(()), list(leaves.values()), allow_unused=True)
    except RuntimeError:  # the loss leaves torch somewhere (.numpy(), in-place on a leaf...)
        return None
    return {
        name: np.zeros(tuple(leaf.shape)) if g is None else _as_numpy(g, name)
        for (name, leaf), g in zip(leaves.items(), found, strict=True)
    }


# ----------------------------------------------------------------------------- the check


def _plain(v: Any) -> Any:
    """A NumPy scalar as the Python number it holds."""
    return v.item() if isinstance(v, np.generic) else v


def _no_exit(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    """``fn`` with a ``sys.exit`` inside it turned into LrlabError (it must return a value)."""

    def call(*args: Any) -> Any:
        try:
            return fn(*args)
        except SystemExit as exc:
            raise LrlabError(f"{name}(params) called sys.exit({exc.code!r}) instead of "
                             "returning") from exc

    return call


def gradcheck(
    params: Mapping[str, Array],
    loss: LossFn,
    grads: GradsFn,
    *,
    eps: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-8,
    max_entries: int | None = None,
    seed: int = 0,
) -> GradcheckResult:
    """Compare ``grads(params)`` with central finite differences of ``loss``, per array.

    The arguments come in the order a gradcheck file defines them: ``params`` (a dict name ->
    array), ``loss(params) -> float``, ``grads(params) -> dict``. The older order
    ``gradcheck(loss, params, grads)`` is recognised (a dict is never callable) and works too.

    ``max_entries`` caps the entries checked per array (default ``DEFAULT_MAX_ENTRIES``; larger
    arrays get a random subset drawn with ``seed``). Missing, extra or misshapen gradients raise
    ``LrlabError`` naming the array, and so does a ``sys.exit`` inside ``loss`` or ``grads``.
    The caller's arrays are left untouched.
    """
    if callable(params) and isinstance(loss, Mapping):  # gradcheck(loss, params, grads)
        params, loss = loss, params
    if not isinstance(params, Mapping) or not params:
        raise bad_value("params", type(params).__name__, "a non-empty dict name -> array")
    for name, fn in (("loss", loss), ("grads", grads)):
        if not callable(fn):
            raise bad_value(name, type(fn).__name__, f"a function {name}(params)")
    eps, rtol, atol, max_entries, seed = (_plain(v) for v in (eps, rtol, atol, max_entries, seed))
    if not (isinstance(eps, Real) and math.isfinite(eps) and eps > 0):
        raise bad_value("eps", eps, "a float in (0, inf)")
    for key, value in (("rtol", rtol), ("atol", atol)):
        if not (isinstance(value, Real) and value >= 0):
            raise bad_value(key, value, "a float in [0, inf)")
    if max_entries is not None and not (isinstance(max_entries, Integral) and max_entries >= 1):
        raise bad_value("max_entries", max_entries, "None or an int >= 1")
    cap = DEFAULT_MAX_ENTRIES if max_entries is None else int(max_entries)
    loss, grads = _no_exit(loss, "loss"), _no_exit(grads, "grads")

    work = {str(k): _float64_copy(v, str(k)) for k, v in params.items()}
    base = _scalar(loss(_copy_params(work)))
    if not math.isfinite(base):
        raise LrlabError(
            f"loss(params) is {base} at the given params; finite differences need a finite loss"
        )
    hand = _check_grads(grads(_copy_params(work)), work)
    auto = _autograd(loss, work)

    rng = np.random.default_rng(seed)
    rows = []
    for name, param in work.items():
        g_shape = hand[name].shape
        flat = param.reshape(-1)  # a view: writing into it perturbs params[name] for loss()
        idx = _entries(flat.shape[0], cap, rng)
        fd = np.empty(idx.shape[0])
        for j, i in enumerate(idx.tolist()):
            orig = float(flat[i])
            flat[i] = orig + eps
            up = _scalar(loss(work))
            flat[i] = orig - eps
            down = _scalar(loss(work))
            flat[i] = orig  # the exact original value, not orig + eps - eps
            fd[j] = (up - down) / (2 * eps)
        g = hand[name].reshape(-1)[idx]
        diff = np.abs(g - fd)
        rel = _rel_error(g, fd)
        max_abs = float(diff.max()) if diff.size else 0.0
        worst = np.unravel_index(int(idx[np.argmax(diff)]), g_shape) if diff.size else ()
        rows.append(
            GradRow(
                name=name,
                rel_error=rel,
                max_abs_error=max_abs,
                ok=bool(rel <= rtol or max_abs <= atol),
                worst_index=tuple(int(i) for i in worst),
                checked=int(idx.shape[0]),
                autograd_rel_error=None if auto is None else _rel_error(hand[name], auto[name]),
            )
        )
    return GradcheckResult(rows=tuple(rows))


# ----------------------------------------------------------------------------- files and CLI


def _load(path: Path) -> ModuleType:
    """Execute the user's file as a fresh module (its directory importable while it loads)."""
    if not path.is_file():
        raise LrlabError(f"gradcheck file {str(path)!r} does not exist or is not a file")
    module_name = f"_lrlab_gradcheck_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise LrlabError(f"gradcheck file {str(path)!r} cannot be loaded as Python")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.resolve().parent)
    sys.modules[module_name] = module  # dataclasses and the like look themselves up here
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise LrlabError(
            f"gradcheck file {str(path)!r} has a syntax error at line {exc.lineno}: {exc.msg}"
        ) from exc
    except (Exception, SystemExit) as exc:
        raise _user_failure(path, exc, "while loading") from exc
    finally:
        sys.modules.pop(module_name, None)
        if folder in sys.path:
            sys.path.remove(folder)
    return module


def _line_in(path: Path, exc: BaseException) -> tuple[int | None, str] | None:
    """The innermost frame of ``exc``'s traceback in the user's file: (line, "in f()" or
    "<module>"); None when the traceback never passes through that file."""
    target, found = path.resolve(), None
    for frame in traceback.extract_tb(exc.__traceback__):
        try:
            same = Path(frame.filename).resolve() == target
        except (OSError, ValueError):
            same = False
        if same:
            found = (frame.lineno, "<module>" if frame.name == "<module>" else f"in {frame.name}()")
    return found


def _user_failure(path: Path, exc: BaseException, when: str) -> LrlabError:
    """One sentence for an exit or exception in the user's file: the file, the line, what."""
    found = _line_in(path, exc)
    line, where = found if found is not None else (None, when)
    where = when if where == "<module>" else where
    at = f" line {line}" if line is not None else ""
    if isinstance(exc, SystemExit):
        what = f"called sys.exit({exc.code!r})"
    else:
        msg = " ".join(str(exc).split())
        what = f"raised {type(exc).__name__}" + (f": {msg}" if msg else "")
    return LrlabError(f"gradcheck file {str(path)!r}{at} ({where}) {what}; the file must "
                      "define params, loss(params) and grads(params), and loss and grads must "
                      "return")


def check_file(path: str | Path) -> GradcheckResult:
    """Run ``gradcheck`` on a Python file defining ``params``, ``loss`` and ``grads``.

    The file is the user's own code and is executed as they wrote it (what they asked for when
    running ``lrlab gradcheck FILE.py``), like ``python FILE.py`` but without ``__main__``. A
    missing file, a syntax error, a missing name, and any exception or ``sys.exit`` in the
    file (while it loads, or inside ``loss`` or ``grads``) raise ``LrlabError`` naming the file,
    the line and what happened: a gradient check that did not run never passes.
    """
    path = Path(path)
    module = _load(path)
    missing = [n for n in ("params", "loss", "grads") if not hasattr(module, n)]
    if missing:
        raise LrlabError(
            f"gradcheck file {str(path)!r} does not define {', '.join(missing)} "
            "(it needs params: dict name -> array, loss(params) -> float, grads(params) -> dict)"
        )
    if not isinstance(module.params, Mapping):
        raise bad_value(f"{path.name}: params", type(module.params).__name__, "a dict")
    for name in ("loss", "grads"):
        if not callable(getattr(module, name)):
            raise bad_value(
                f"{path.name}: {name}", type(getattr(module, name)).__name__, "a function"
            )
    try:
        return gradcheck(module.params, module.loss, module.grads)
    except LrlabError as exc:
        cause = exc.__cause__
        if isinstance(cause, SystemExit):  # sys.exit inside loss or grads
            raise _user_failure(path, cause, "while checking") from cause
        raise
    except Exception as exc:  # the user's loss or grads raised (else: lrlab's own failure)
        if _line_in(path, exc) is None:
            raise
        raise _user_failure(path, exc, "while checking") from exc


def main(path: str | Path) -> int:
    """``lrlab gradcheck FILE.py``: print one line per array; 0 when all agree, 3 otherwise.

    ``LrlabError`` (bad file) propagates for the CLI to turn into exit code 2.
    """
    result = check_file(path)
    for line in result.lines():
        print(line)
    return EXIT_OK if result.ok else EXIT_WRONG
