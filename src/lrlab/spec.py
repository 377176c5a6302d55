"""The experiment spec: what the user wrote, validated, then expanded into members and cohorts.

A `Spec` is inert: it holds only what the user asked for. `members()` and
`cohorts()` derive the work from it and never write back. Every key has a constraint in the
tables below; a bad value raises `LrlabError` with one sentence naming the key, the
value and what is allowed.

Precedence: defaults < TOML file < CLI flags, merged by `resolve()`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import tomllib

from lrlab.errors import LrlabError, bad_value

# ----------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class DataSpec:
    """Where the data comes from and how it is split and scaled."""

    source: str = "blobs"  # a built-in name, or csv:PATH, npz:PATH, parquet:PATH, mnist:PATH ...
    n: int = 1000  # synthetic sets: number of samples
    classes: int = 4  # synthetic sets with a class count (blobs, spiral)
    features: int = 2  # blobs: input dimension
    noise: float | None = None  # synthetic noise (blobs: cluster_std); None = the set's default
    data_seed: int = 0  # seed of the synthetic generator and of the stratified/random split
    preprocess: str = "none"  # none | standardize | minmax (fit on the training part only)
    validation_split: float = 0.2  # fraction held out for validation
    # stratified (seeded by data_seed: every class in both parts, in proportion) | last (Keras'
    # validation_split: the last fraction, one class on class-sorted sets) | random | given
    split: str = "stratified"
    label_column: str | None = None  # CSV / Parquet: the label column (default: the last one)
    limit: int | None = None  # keep only the first N training samples (smoke runs)


@dataclass(frozen=True)
class ModelSpec:
    """A batched MLP. Input and output sizes come from the data."""

    hidden: tuple[int, ...] = (10, 10, 10, 10)
    activation: str = "relu"
    output: str = "softmax"  # softmax (+CE) | sigmoid (+BCE) | quadratic (sigmoid + Nielsen's cost)
    init: str | tuple[str, ...] = "pytorch"  # weights: one scheme, or one per layer
    bias_init: str = "auto"  # auto: what the init preset implies (zeros for plain schemes)
    init_scale: float = 1.0  # multiplies every initial weight (and random bias)
    input_dim: int | None = None  # when given (--model 2-10-4), checked against the data
    output_dim: int | None = None


@dataclass(frozen=True)
class TrainSpec:
    """How each member is trained. Any key may also be a sweep axis."""

    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float | None = None  # None: the optimizer's default (adamw 0.01, others 0)
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float | None = None  # None: the optimizer's default (adagrad 1e-10, others 1e-8)
    alpha: float = 0.99  # rmsprop smoothing constant
    centered: bool = False
    initial_accumulator_value: float = 0.0  # adagrad
    lr_decay: float = 0.0  # adagrad's own lr_decay
    batch_size: int = 32  # 0 = full batch
    epochs: int = 20
    schedule: str = "constant"
    schedule_args: tuple[tuple[str, Any], ...] = ()  # (key, value) pairs, see schedules;
    # a value may be a ScheduleTable: the arguments of one schedule only (see schedule_args_for)
    clip_norm: float = 0.0  # 0 = no clipping (per member global grad-norm clip)
    shuffle: str = "epoch"  # epoch | once | none (true/false: epoch/none), see SHUFFLES


@dataclass(frozen=True)
class Phase:
    """A later training phase continuing from the weights of the previous one."""

    overrides: tuple[tuple[str, Any], ...] = ()
    name: str = ""


@dataclass(frozen=True)
class RunSpec:
    """Where and how the work runs: never changes the numbers except through dtype."""

    device: str = "cpu"
    dtype: str = "float32"
    backend: str = "local"
    address: str | None = None
    max_members_per_cohort: int = 0  # 0 = decided from a memory estimate
    probes: bool = True
    threads: int = 0  # 0 = torch's default
    max_members: int = 100_000  # refuse a larger sweep (the product of the axes x seeds)
    max_memory_gb: float = 0.0  # refuse a larger memory estimate; 0 = this machine's memory
    select: str = "val_loss"  # what the recommended lr is chosen by (SELECT)


@dataclass(frozen=True)
class Spec:
    """One experiment, exactly as the user wrote it (after defaults)."""

    name: str = "experiment"
    data: DataSpec = field(default_factory=DataSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    run: RunSpec = field(default_factory=RunSpec)
    sweep: tuple[tuple[str, tuple[Any, ...]], ...] = ()  # (key, values) axes, in order
    seeds: tuple[int, ...] = (0,)
    phases: tuple[Phase, ...] = ()

    def axes(self) -> dict[str, tuple[Any, ...]]:
        """The sweep axes, seeds included when there is more than one."""
        out = dict(self.sweep)
        if len(self.seeds) > 1:
            out["seed"] = self.seeds
        return out


# ----------------------------------------------------------------------------- constraints

SYNTHETIC = ("blobs", "moons", "circles", "spiral", "xor")
SELECT = ("val_loss", "val_acc")
"""What the recommended lr is chosen by: the median final validation loss (lowest) or
accuracy (highest); without a validation set, the training loss or accuracy."""
BUNDLED = ("iris", "wine", "digits", "breast_cancer")
FILE_PREFIXES = ("csv", "npz", "parquet", "mnist", "fashion-mnist")
ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid", "gelu", "linear")
OUTPUTS = ("softmax", "sigmoid", "quadratic")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw")
PREPROCESS = ("none", "standardize", "minmax")
SPLITS = ("last", "stratified", "random", "given")
DTYPES = ("float32", "float64")
DEVICES = ("cpu", "cuda")
BACKENDS = ("local", "ray")
SHUFFLES = ("epoch", "once", "none")
"""The data order: `epoch` a new permutation per member per epoch (Keras fit(shuffle=True)
without a global seed, torch's DataLoader(shuffle=True)); `once` one permutation per member
reused every epoch (Keras 3 on TensorFlow under keras.utils.set_random_seed); `none` the data
order as given."""
INIT_PRESETS = ("pytorch", "keras", "nielsen")
INIT_SCHEMES = (
    "glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_uniform",
    "lecun_normal", "zeros",
)  # plus normal:STD and uniform:LO:HI


def _int(lo: int, hi: float = math.inf) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        ok = isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi
        return None if ok else f"an integer in [{lo}, {hi}]"

    return check


def _float(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False):
    def check(v: Any) -> str | None:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return _interval(lo, hi, lo_open, hi_open)
        if (v < lo or (lo_open and v == lo)) or (v > hi or (hi_open and v == hi)):
            return _interval(lo, hi, lo_open, hi_open)
        return None

    return check


def _interval(lo: float, hi: float, lo_open: bool, hi_open: bool) -> str:
    return f"a number in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


def _one_of(options: Sequence[str]) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if v in options else "one of " + ", ".join(options)

    return check


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def _shuffle(v: Any) -> str | None:
    return None if v in SHUFFLES and isinstance(v, str) else \
        "one of " + ", ".join(SHUFFLES) + " (or true = epoch, false = none)"


def shuffle_mode(v: Any) -> str:
    """`[train].shuffle` as one of SHUFFLES: the old booleans mean epoch (true) / none (false)."""
    if v is True:
        return "epoch"
    if v is False:
        return "none"
    return v


def _opt(check: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    return lambda v: None if v is None else check(v)


def _str(v: Any) -> str | None:
    return None if isinstance(v, str) and v else "a non-empty string"


NAME_MAX = 100
"""The longest experiment name: it becomes the folder runs/NAME."""


def check_folder_name(name: str) -> None:
    """Without --out the experiment's folder is runs/NAME: NAME must be one plain folder name,
    so that the folder stays inside runs/."""
    ok = (isinstance(name, str) and 0 < len(name) <= NAME_MAX and name not in (".", "..")
          and not any(c in "/\\" or ord(c) < 32 or ord(c) == 127 for c in name))
    if not ok:
        raise bad_value("name", name, f"a folder name of 1 to {NAME_MAX} characters without /, "
                        "\\, control characters, and not . or .. (without --out the folder is "
                        "runs/NAME)")


def _source(v: Any) -> str | None:
    allowed = (
        "a built-in set (" + ", ".join(SYNTHETIC + BUNDLED) + ") or PREFIX:PATH with PREFIX in "
        + ", ".join(FILE_PREFIXES) + " (or plain mnist / fashion-mnist to search the default paths)"
    )
    if not isinstance(v, str):
        return allowed
    if v in SYNTHETIC + BUNDLED + ("mnist", "fashion-mnist"):
        return None
    prefix, _, rest = v.partition(":")
    return None if prefix in FILE_PREFIXES and rest else allowed


_INIT_RE = re.compile(r"^(normal:[^:]+|uniform:[^:]+:[^:]+)$")


def init_error(v: Any) -> str | None:
    """None when `v` is a valid initializer name, else what is allowed."""
    allowed = (
        "one of " + ", ".join(INIT_PRESETS + INIT_SCHEMES)
        + ", normal:STD or uniform:LO:HI (STD > 0, LO < HI)"
    )
    if not isinstance(v, str):
        return allowed
    if v in INIT_PRESETS + INIT_SCHEMES:
        return None
    if not _INIT_RE.match(v):
        return allowed
    try:
        nums = [float(x) for x in v.split(":")[1:]]
    except ValueError:
        return allowed
    if not all(math.isfinite(x) for x in nums):
        return allowed
    if v.startswith("normal:") and nums[0] <= 0:
        return allowed
    if v.startswith("uniform:") and nums[0] >= nums[1]:
        return allowed
    return None


def _init(v: Any) -> str | None:
    if isinstance(v, (list, tuple)):
        if not v:
            return "a non-empty list of initializers"
        return next((e for e in map(init_error, v) if e), None)
    return init_error(v)


def _bias_init(v: Any) -> str | None:
    return None if v == "auto" else init_error(v)


def _hidden(v: Any) -> str | None:
    ok = isinstance(v, (list, tuple)) and all(
        isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v
    )
    return None if ok else "a list of positive layer widths, e.g. [10, 10]"


DATA_RULES: dict[str, Callable[[Any], str | None]] = {
    "source": _source,
    "n": _int(2, 10_000_000),
    "classes": _int(2, 1000),
    "features": _int(1, 100_000),
    "noise": _opt(_float(0.0, 1e6)),
    "data_seed": _int(0, 2**63 - 1),
    "preprocess": _one_of(PREPROCESS),
    "validation_split": _float(0.0, 1.0, hi_open=True),
    "split": _one_of(SPLITS),
    "label_column": _opt(_str),
    "limit": _opt(_int(2, 10**9)),
}
MODEL_RULES: dict[str, Callable[[Any], str | None]] = {
    "hidden": _hidden,
    "activation": _one_of(ACTIVATIONS),
    "output": _one_of(OUTPUTS),
    "init": _init,
    "bias_init": _bias_init,
    "init_scale": _float(0.0, 1e6, lo_open=True),
    "input_dim": _opt(_int(1, 10**7)),
    "output_dim": _opt(_int(1, 10**6)),
}
TRAIN_RULES: dict[str, Callable[[Any], str | None]] = {
    "optimizer": _one_of(OPTIMIZERS),
    "lr": _float(0.0, 1e12, lo_open=True),
    "momentum": _float(0.0, 1.0, hi_open=True),
    "dampening": _float(0.0, 1.0),
    "nesterov": _bool,
    "weight_decay": _opt(_float(0.0, 1e6)),
    "beta1": _float(0.0, 1.0, hi_open=True),
    "beta2": _float(0.0, 1.0, hi_open=True),
    "eps": _opt(_float(0.0, 1.0, lo_open=True)),
    "alpha": _float(0.0, 1.0, hi_open=True),
    "centered": _bool,
    "initial_accumulator_value": _float(0.0, 1e6),
    "lr_decay": _float(0.0, 1e6),
    "batch_size": _int(0, 10**9),
    "epochs": _int(1, 10**7),
    "schedule": _str,  # checked against the schedule registry in validate()
    "schedule_args": lambda v: None,  # checked by the schedule itself in validate()
    "clip_norm": _float(0.0, 1e12),
    "shuffle": _shuffle,
}
RUN_RULES: dict[str, Callable[[Any], str | None]] = {
    "device": _one_of(DEVICES),
    "dtype": _one_of(DTYPES),
    "backend": _one_of(BACKENDS),
    "address": _opt(_str),
    "max_members_per_cohort": _int(0, 10**7),
    "probes": _bool,
    "threads": _int(0, 1024),
    "max_members": _int(1, 10**12),
    "max_memory_gb": _float(0.0, 1e9),
    "select": _one_of(SELECT),
}
SECTIONS: dict[str, tuple[type, dict[str, Callable[[Any], str | None]]]] = {
    "data": (DataSpec, DATA_RULES),
    "model": (ModelSpec, MODEL_RULES),
    "train": (TrainSpec, TRAIN_RULES),
    "run": (RunSpec, RUN_RULES),
}
# Keys that may be a sweep axis, and the section each lives in.
SWEEPABLE: dict[str, str] = {
    **{k: "train" for k in TRAIN_RULES if k != "schedule_args"},
    **{k: "model" for k in ("hidden", "activation", "init", "bias_init", "init_scale")},
    **{k: "data" for k in ("preprocess", "noise", "validation_split", "limit")},
}


def _check(section: str, key: str, value: Any) -> None:
    rules = SECTIONS[section][1]
    if key not in rules:
        raise LrlabError(
            f"`[{section}].{key}` is not a known key; allowed: " + ", ".join(sorted(rules))
        )
    err = rules[key](value)
    if err:
        raise bad_value(f"[{section}].{key}", value, err)


# ----------------------------------------------------------------------------- building


class ScheduleTable(tuple):
    """A per-schedule sub-table of `[train].schedule_args`, as sorted (key, value) pairs.

    `[train.schedule_args.step] step_size = 10` is stored as
    `("step", ScheduleTable((("step_size", 10),)))`; a member whose schedule is `step` gets
    these keys (see `schedule_args_for`), members with other schedules do not.
    """

    __slots__ = ()


def _schedule_args(value: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """`[train].schedule_args` as sorted pairs; a sub-table becomes a ScheduleTable."""
    out = []
    for k, v in value.items():
        if isinstance(v, Mapping):
            out.append((k, ScheduleTable(sorted((ik, _tuplify(iv)) for ik, iv in v.items()))))
        else:
            out.append((k, _tuplify(v)))
    return tuple(sorted(out))


def _args_dict(args: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    """The inverse of `_schedule_args` (TOML-shaped: sub-tables as dicts, lists as lists)."""
    return {k: ({ik: _listify(iv) for ik, iv in v} if isinstance(v, ScheduleTable)
                else _listify(v)) for k, v in args}


def schedule_args_for(args: tuple[tuple[str, Any], ...], schedule: str
                      ) -> tuple[tuple[str, Any], ...]:
    """The arguments a member with `schedule` gets from the raw `[train].schedule_args`.

    The flat keys that `schedule` accepts, then its own sub-table `[train.schedule_args.NAME]`
    on top (a key in both: the sub-table wins). Flat keys meant for other schedules of the
    sweep and other schedules' sub-tables are left out, so each member holds exactly its own.
    """
    from lrlab import schedules

    own = next((v for k, v in args if k == schedule and isinstance(v, ScheduleTable)), ())
    accepted = schedules.allowed_args(schedule) if schedule in schedules.SCHEDULES else None
    flat = {k: v for k, v in args if not isinstance(v, ScheduleTable)
            and (accepted is None or k in accepted)}
    return tuple(sorted({**flat, **dict(own)}.items()))


def _tuplify(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_tuplify(x) for x in v)
    return v


def _build_section(section: str, values: Mapping[str, Any], base: Any) -> Any:
    cls, _ = SECTIONS[section]
    clean: dict[str, Any] = {}
    for key, value in values.items():
        if section == "train" and key == "schedule_args":
            if not isinstance(value, Mapping):
                raise bad_value("[train].schedule_args", value, "a table of schedule parameters")
            clean[key] = _schedule_args(value)
            continue
        value = _tuplify(value)
        if key == "shuffle":
            value = shuffle_mode(value)
        if isinstance(value, int) and not isinstance(value, bool) and _wants_float(cls, key):
            value = float(value)
        _check(section, key, value)
        clean[key] = value
    return replace(base, **clean)


def _wants_float(cls: type, key: str) -> bool:
    for f in fields(cls):
        if f.name == key:
            return "float" in str(f.type) and "int" not in str(f.type)
    return False


def parse_seeds(seeds: Any, first_seed: int = 0, max_members: int | None = None,
                axes: Mapping[str, int] | None = None, run: RunSpec | None = None
                ) -> tuple[int, ...]:
    """`seeds = 8` means seeds first..first+7; a list names them.

    A member count (the seeds times the lengths of the other `axes`) above `max_members`
    (`[run].max_members` when None), or whose bookkeeping alone exceeds `run`'s memory limit,
    is refused before the seeds are expanded.
    """
    seeds, first_seed = plain(seeds), plain(first_seed)
    cap = RunSpec.max_members if max_members is None else max_members

    def check_count(n: int) -> None:
        lens = dict(axes or {})
        count = math.prod(lens.values()) * n
        if count > cap:
            detail = " x ".join([f"{k}: {v}" for k, v in lens.items()] + [f"seeds: {n}"])
            raise too_many_members(count, detail, cap)
        if run is not None:
            check_memory(count * MEMBER_BYTES, f"{count} members x {MEMBER_BYTES} bytes of "
                         "bookkeeping each", run)

    if isinstance(seeds, bool):
        raise bad_value("seeds", seeds, "a count >= 1 or a list of integer seeds")
    if isinstance(seeds, int):
        if seeds < 1:
            raise bad_value("seeds", seeds, "a count >= 1 or a list of integer seeds")
        check_count(seeds)
        return tuple(range(first_seed, first_seed + seeds))
    if isinstance(seeds, (list, tuple)) and seeds and all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds
    ):
        if len(set(seeds)) != len(seeds):
            raise bad_value("seeds", list(seeds), "distinct seeds")
        check_count(len(seeds))
        return tuple(seeds)
    shown = seeds if not isinstance(seeds, (list, tuple)) or len(seeds) <= 10 else \
        f"a list of {len(seeds)} values"
    raise bad_value("seeds", shown, "a count >= 1 or a list of integer seeds >= 0")


# ----------------------------------------------------------------------------- sizes

MEMBER_BYTES = 4096
"""What one member costs before it trains, whatever its size: its `Member` (about 1 KB,
measured with tracemalloc), its cohort entry, its store rows and its report rows."""
MAX_DEPTH = 32
"""Lists and tables nested deeper than this in a spec are refused (no key needs more than 3)."""


def too_many_members(count: int, detail: str, cap: int) -> LrlabError:
    """The one sentence for a sweep with more members than `[run].max_members` allows."""
    return LrlabError(
        f"the sweep has {count} members ({detail}), more than `[run].max_members` = {cap}; "
        "use fewer seeds or axis values, or raise the limit (--max-members N or "
        "`[run].max_members`)")


def member_count(spec: Spec) -> int:
    """The number of members, from the axes alone (nothing is expanded)."""
    return math.prod(len(v) for _, v in spec.sweep) * len(spec.seeds)


def machine_memory_bytes() -> int | None:
    """This machine's physical memory, or None where the OS does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def memory_limit(run: RunSpec) -> tuple[int | None, str]:
    """`[run].max_memory_gb` in bytes (0: this machine's memory), and how to say it."""
    if run.max_memory_gb > 0:
        return int(run.max_memory_gb * 2**30), f"`[run].max_memory_gb` = {run.max_memory_gb:g}"
    total = machine_memory_bytes()
    return total, ("this machine's memory" if total is None else
                   f"this machine's memory ({total / 2**30:.1f} GB)")


def check_memory(estimate: int, what: str, run: RunSpec) -> None:
    """Refuse `estimate` bytes beyond the limit, with one sentence saying what it is for."""
    limit, name = memory_limit(run)
    if limit is not None and estimate > limit:
        raise LrlabError(
            f"the sweep needs an estimated {estimate / 2**30:.3g} GB ({what}), more than "
            f"{name}; use a smaller model, data or sweep, or raise the limit "
            "(--max-memory-gb X or `[run].max_memory_gb`)")


def check_size(spec: Spec) -> None:
    """The member count against `[run].max_members` and its fixed cost against the memory
    limit, arithmetically from the axes (before any member is built)."""
    count = member_count(spec)
    if count > spec.run.max_members:
        detail = " x ".join([f"{k}: {len(v)}" for k, v in spec.sweep]
                            + [f"seeds: {len(spec.seeds)}"])
        raise too_many_members(count, detail, spec.run.max_members)
    check_memory(count * MEMBER_BYTES, f"{count} members x {MEMBER_BYTES} bytes of "
                 "bookkeeping each", spec.run)


def plain(value: Any, key: str = "spec", depth: int = 0) -> Any:
    """`value` with NumPy (and torch) scalars and arrays turned into Python numbers and lists,
    mappings into dicts; nesting deeper than MAX_DEPTH is refused, naming the key."""
    if depth > MAX_DEPTH:
        raise LrlabError(f"`{key}` nests lists or tables more than {MAX_DEPTH} levels deep; "
                         "spec values are numbers, strings, lists and tables of those")
    if type(value).__module__ in ("numpy", "torch") and hasattr(value, "tolist"):
        if getattr(value, "ndim", 0):  # an array: a list of its rows or elements
            return [plain(v, key, depth + 1) for v in value]
        if type(value).__name__ in ("float16", "float32"):  # the shortest decimal, 0.1 not
            return float(str(value))  # 0.10000000149011612
        return value.tolist()  # np.int64(3) -> 3, np.bool_(True) -> True, tensor(2) -> 2
    if isinstance(value, Mapping):
        def child(k: Any) -> str:
            return str(k) if depth == 0 else f"[{key}].{k}" if depth == 1 else f"{key}.{k}"

        return {k: plain(v, child(k), depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [plain(v, key, depth + 1) for v in value]
        return items if isinstance(value, list) else tuple(items)
    return value


def from_dict(doc: Mapping[str, Any], base: Spec | None = None) -> Spec:
    """Build a `Spec` from a TOML-shaped dict, on top of `base` (defaults when None).

    NumPy scalars and arrays count as the numbers and lists they hold.
    """
    if not isinstance(doc, Mapping):
        raise bad_value("spec", type(doc).__name__, "a Spec, a path to a TOML file or a dict "
                        "of tables (data, model, train, run, sweep, phases)")
    doc = plain(doc)
    spec = base or Spec()
    known = set(SECTIONS) | {"name", "sweep", "phases"}
    for key in doc:
        if key not in known:
            raise LrlabError(
                f"`{key}` is not a known top-level key; allowed: " + ", ".join(sorted(known))
            )
    updates: dict[str, Any] = {}
    if "name" in doc:
        if _str(doc["name"]):
            raise bad_value("name", doc["name"], "a non-empty string")
        updates["name"] = doc["name"]
    for section in SECTIONS:
        if section in doc:
            if not isinstance(doc[section], Mapping):
                raise bad_value(section, doc[section], f"a table [{section}]")
            updates[section] = _build_section(section, doc[section], getattr(spec, section))
    if "sweep" in doc:
        sweep = doc["sweep"]
        if not isinstance(sweep, Mapping):
            raise bad_value("sweep", sweep, "a table [sweep] of axes")
        axes = dict(spec.sweep)
        sweep = dict(sweep)
        if "seeds" in sweep or "first_seed" in sweep:
            first = sweep.pop("first_seed", 0)
            if isinstance(first, bool) or not isinstance(first, int) or first < 0:
                raise bad_value("[sweep].first_seed", first, "an integer >= 0")
            count = sweep.pop("seeds", len(spec.seeds))
            lens = {k: len(v) for k, v in spec.sweep}  # the axes' lengths, for the count
            lens.update({k: len(v) for k, v in sweep.items() if isinstance(v, (list, tuple))})
            run = updates.get("run", spec.run)
            updates["seeds"] = parse_seeds(count, first, run.max_members, lens, run)
        for key, values in sweep.items():
            axes[key] = _axis(key, values)
        updates["sweep"] = tuple(axes.items())
    if "phases" in doc:
        updates["phases"] = _phases(doc["phases"])
    return replace(spec, **updates)


def _axis(key: str, values: Any) -> tuple[Any, ...]:
    if key not in SWEEPABLE:
        raise LrlabError(
            f"`[sweep].{key}` cannot be swept; sweepable keys: " + ", ".join(sorted(SWEEPABLE))
            + ", seeds"
        )
    if not isinstance(values, (list, tuple)) or not values:
        raise bad_value(f"[sweep].{key}", values, "a non-empty list of values")
    section = SWEEPABLE[key]
    cls = SECTIONS[section][0]
    out = []
    for v in values:
        v = shuffle_mode(_tuplify(v)) if key == "shuffle" else _tuplify(v)
        if isinstance(v, int) and not isinstance(v, bool) and _wants_float(cls, key):
            v = float(v)
        err = SECTIONS[section][1][key](v)
        if err:
            raise bad_value(f"[sweep].{key}", v, err)
        out.append(v)
    if len(set(map(repr, out))) != len(out):
        raise bad_value(f"[sweep].{key}", list(values), "distinct values")
    return tuple(out)


def _phases(raw: Any) -> tuple[Phase, ...]:
    if not isinstance(raw, list) or not all(isinstance(p, Mapping) for p in raw):
        raise bad_value("phases", raw, "a list of [[phases]] tables of [train] keys")
    out = []
    for i, p in enumerate(raw):
        p = dict(p)
        name = p.pop("name", f"phase {i + 2}")
        for key, value in p.items():
            phase_keys = sorted(k for k in TRAIN_RULES if k not in ("optimizer", "schedule_args"))
            if key not in phase_keys:
                raise LrlabError(f"`phases[{i}].{key}` is not a phase key; allowed: "
                                 + ", ".join(phase_keys))
            if isinstance(value, int) and not isinstance(value, bool) and \
                    _wants_float(TrainSpec, key):
                value = float(value)
            if key == "shuffle":
                value = p[key] = shuffle_mode(value)
            err = TRAIN_RULES[key](value)
            if err:
                raise bad_value(f"phases[{i}].{key}", value, err)
        out.append(Phase(overrides=tuple(p.items()), name=str(name)))
    return tuple(out)


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML spec file, with a one-line error for a missing or malformed file."""
    p = Path(path)
    if not p.is_file():
        raise LrlabError(f"spec file {str(p)!r} does not exist")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise LrlabError(f"spec file {str(p)!r} is not valid TOML: {exc}") from None
    except RecursionError:
        raise LrlabError(f"spec file {str(p)!r} nests arrays or tables too deeply to read; "
                         f"spec values nest at most {MAX_DEPTH} levels") from None
    except OSError as exc:
        raise LrlabError(f"spec file {str(p)!r} cannot be read ({exc.strerror})") from None


def resolve(
    toml: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None
) -> Spec:
    """Defaults, then the TOML document, then CLI overrides (same shape): later wins."""
    spec = from_dict(toml or {})
    if overrides:
        spec = from_dict(overrides, spec)
    validate(spec)
    return spec


def validate(spec: Spec) -> None:
    """Cross-key checks that one key alone cannot make."""
    from lrlab import schedules  # the schedule registry owns its parameter rules

    check_size(spec)  # before members() expands anything
    _check_lr_dtype(spec)
    _check_schedule_args(spec, schedules)
    for m in members(spec):
        for t in (m.train, *m.phases):
            if t.nesterov and (t.momentum <= 0 or t.dampening != 0):
                raise LrlabError(
                    "`[train].nesterov` needs momentum > 0 and dampening = 0 (as "
                    f"torch.optim.SGD); got momentum {t.momentum!r}, dampening {t.dampening!r}")
    if spec.run.backend == "local" and spec.run.address:
        raise LrlabError("`[run].address` needs `[run].backend = \"ray\"`; got backend \"local\"")
    if spec.data.split == "given" and not spec.data.source.startswith(
            ("mnist", "fashion-mnist", "npz:")):
        raise bad_value("[data].split", "given", "last, stratified or random for this source "
                        "(only MNIST-format and npz sources bring their own test set)")


TINY = {"float32": 1.1754943508222875e-38, "float64": 2.2250738585072014e-308}
"""The smallest normal number of each training dtype: a smaller lr or eps rounds to 0 (or loses
its precision) there."""


def _check_lr_dtype(spec: Spec) -> None:
    """lr and eps must be representable (normal, non-zero) in the training dtype."""
    tiny = TINY[spec.run.dtype]
    places: list[tuple[str, str, Any]] = [("[train]", k, getattr(spec.train, k))
                                          for k in ("lr", "eps")]
    places += [("[sweep]", k, v) for k, vs in spec.sweep if k in ("lr", "eps") for v in vs]
    places += [(f"phases[{i}]", k, v) for i, p in enumerate(spec.phases)
               for k, v in p.overrides if k in ("lr", "eps")]
    for where, key, v in places:
        if isinstance(v, (int, float)) and 0 < v < tiny:
            raise bad_value(f"{where}.{key}", v, f"at least {tiny:.3g} in {spec.run.dtype} "
                            "(smaller rounds to 0 or loses its precision there; "
                            "`[run].dtype` = \"float64\" goes down to 2.23e-308)")


def schedules_in_use(spec: Spec) -> list[str]:
    """Every schedule some member trains with: `[train]`, the sweep axis and the phases."""
    axis = dict(spec.sweep).get("schedule")
    names = list(axis) if axis else [spec.train.schedule]
    names += [v for p in spec.phases for k, v in p.overrides if k == "schedule"]
    return list(dict.fromkeys(names))


def _check_schedule_args(spec: Spec, schedules: Any) -> None:
    """Each schedule in use is checked against its own arguments (`schedule_args_for`)."""
    raw = spec.train.schedule_args
    names = schedules_in_use(spec)
    tables = [k for k, v in raw if isinstance(v, ScheduleTable)]
    for name in tables:
        if name not in schedules.SCHEDULES:
            raise LrlabError(
                f"`[train].schedule_args.{name}` is a table, so it must be named after a "
                "schedule; schedules: " + ", ".join(schedules.SCHEDULES))
    flat = {k: v for k, v in raw if not isinstance(v, ScheduleTable)}
    if len(names) == 1 and not tables:  # one schedule, flat keys: every key must be its own
        schedules.check_args(names[0], flat)
        return
    for name in names:
        if name not in schedules.SCHEDULES:
            schedules.check_args(name, {})  # raises: names the schedules there are
    for key in flat:
        if not any(key in schedules.allowed_args(n) for n in names):
            raise LrlabError(
                f"`[train].schedule_args.{key}` is not an argument of any schedule in use ("
                + ", ".join(names) + "); put it in a [train.schedule_args.NAME] table of the "
                "schedule it belongs to, or remove it")
    for name in names:
        try:
            schedules.check_args(name, dict(schedule_args_for(raw, name)))
        except LrlabError as exc:
            if len(names) == 1:
                raise
            raise LrlabError(f"schedule {name!r}: {exc}") from None


def to_dict(spec: Spec) -> dict[str, Any]:
    """The spec as a TOML-shaped dict (what `from_dict` reads back to the same Spec)."""
    out: dict[str, Any] = {"name": spec.name}
    for section in SECTIONS:
        d = dataclasses.asdict(getattr(spec, section))
        if section == "train":
            d["schedule_args"] = _args_dict(spec.train.schedule_args)
        out[section] = {k: _listify(v) for k, v in d.items() if v is not None}
    sweep: dict[str, Any] = {k: _listify(v) for k, v in spec.sweep}
    sweep["seeds"] = list(spec.seeds)
    out["sweep"] = sweep
    if spec.phases:
        out["phases"] = [{"name": p.name, **dict(p.overrides)} for p in spec.phases]
    return out


def _listify(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_listify(x) for x in v]
    return v


def to_toml(spec: Spec) -> str:
    """Render the spec as TOML text (a small writer: scalars, lists and tables only)."""
    d = to_dict(spec)
    lines = [f"name = {_toml_value(d.pop('name'))}"]
    phases = d.pop("phases", [])
    for section, table in d.items():
        lines.append(f"\n[{section}]")
        for k, v in table.items():
            if isinstance(v, dict):
                inner = ", ".join(f"{ik} = {_toml_value(iv)}" for ik, iv in v.items())
                lines.append(f"{k} = {{{inner}}}")
            else:
                lines.append(f"{k} = {_toml_value(v)}")
    for p in phases:
        lines.append("\n[[phases]]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in p.items())
    return "\n".join(lines) + "\n"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):  # an inline table (a per-schedule sub-table of schedule_args)
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {v!r} as TOML")


# ----------------------------------------------------------------------------- members


@dataclass(frozen=True)
class Member:
    """One run of the sweep: the swept values and the fully resolved sections."""

    index: int
    values: tuple[tuple[str, Any], ...]  # the swept keys and this member's values
    seed: int
    data: DataSpec
    model: ModelSpec
    train: TrainSpec
    phases: tuple[TrainSpec, ...] = ()  # resolved later phases (train specs)

    @property
    def swept(self) -> dict[str, Any]:
        return {k: _listify(v) for k, v in self.values}


@dataclass(frozen=True)
class Cohort:
    """Members trained together: same data, architecture, batch size and optimizer family."""

    index: int
    members: tuple[Member, ...]

    @property
    def first(self) -> Member:
        return self.members[0]


def optimizer_family(name: str) -> str:
    """sgd, momentum and nesterov are one family (momentum/nesterov are per-member values)."""
    return "sgd" if name in ("sgd", "momentum", "nesterov") else name


def members(spec: Spec) -> list[Member]:
    """The product of the sweep axes (seeds innermost), in a stable order."""
    axes = list(spec.sweep)
    keys = [k for k, _ in axes]
    out: list[Member] = []
    for combo in itertools.product(*(vs for _, vs in axes)):
        for seed in spec.seeds:
            sections = {"data": {}, "model": {}, "train": {}}
            for k, v in zip(keys, combo):
                sections[SWEEPABLE[k]][k] = v
            data = replace(spec.data, **sections["data"])
            model = replace(spec.model, **sections["model"])
            train = replace(spec.train, **sections["train"])
            train = _own_schedule_args(_normalise_optimizer(train), spec)
            phases = tuple(_own_schedule_args(_normalise_optimizer(
                replace(train, **dict(p.overrides))), spec) for p in spec.phases)
            values = tuple(zip(keys, combo)) + (("seed", seed),)
            out.append(Member(len(out), values, seed, data, model, train, phases))
    return out


def _own_schedule_args(t: TrainSpec, spec: Spec) -> TrainSpec:
    """`t` with exactly the schedule arguments of its own schedule (`schedule_args_for`)."""
    return replace(t, schedule_args=schedule_args_for(spec.train.schedule_args, t.schedule))


def _normalise_optimizer(t: TrainSpec) -> TrainSpec:
    """`momentum`/`nesterov` as names are sgd with those flags (torch.optim.SGD semantics)."""
    if t.optimizer == "nesterov":
        return replace(t, nesterov=True, momentum=t.momentum or 0.9)
    if t.optimizer == "momentum":
        return replace(t, momentum=t.momentum or 0.9)
    return t


def cohort_key(m: Member) -> tuple[Any, ...]:
    """What members must share to be trained as one batched model (not the shuffle mode: each
    member draws its own data order)."""
    t = m.train
    return (
        m.data,
        m.model.hidden,
        m.model.activation,
        m.model.output,
        t.batch_size,
        t.epochs,
        optimizer_family(t.optimizer),
        t.schedule,
        t.schedule_args,
        tuple((p.batch_size, p.epochs, p.schedule, p.schedule_args) for p in m.phases),
    )


def cohorts(spec: Spec, max_members: int = 0) -> list[Cohort]:
    """Group members into cohorts, in first-appearance order; split any larger than max_members.

    The split depends only on the spec and `max_members`, so a cohort keeps its composition
    wherever and whenever it runs (locally, on Ray, after a resume).
    """
    groups: dict[tuple[Any, ...], list[Member]] = {}
    for m in members(spec):
        groups.setdefault(cohort_key(m), []).append(m)
    out: list[Cohort] = []
    for group in groups.values():
        size = max_members or len(group)
        for i in range(0, len(group), size):
            out.append(Cohort(len(out), tuple(group[i : i + size])))
    return out
