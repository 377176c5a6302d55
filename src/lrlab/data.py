"""Data: synthetic 2-D sets, sklearn's bundled sets, MNIST-format files and user tables.

`load(DataSpec) -> Dataset` reads or generates the raw samples, splits off the validation
(or test) part, trims to `limit`, then fits the preprocessing on the training part only and
applies it to both. Features are float32 `[n, d]`, labels int64 `[n]` in `0..C-1`; the
returned arrays are read-only and the result is memoised on the (frozen) `DataSpec`.

Sources (`[data].source`):
- synthetic, seeded by `data_seed`: blobs, moons, circles, spiral, xor;
- bundled with scikit-learn (no network): iris, wine, digits, breast_cancer;
- `csv:PATH`, `parquet:PATH`: a header row, the label column is `label_column` or the last
  one; labels (strings or numbers) map to `0..C-1` in sorted order; features must be numeric;
- `npz:PATH`: arrays `X`, `y` (and optionally `X_test`, `y_test` for `split = "given"`);
- `mnist:PATH` / `fashion-mnist:PATH`: Nielsen's `mnist.pkl.gz`, a folder of IDX files
  (`train-images-idx3-ubyte[.gz]` ...), or an `.npz`; pixels are bytes / 256 as in Nielsen;
- plain `mnist` / `fashion-mnist`: searched in `MNIST_SEARCH_PATH`.

Nothing is ever downloaded and the user's files are only read. Pickle is used for one
format only, Nielsen's `mnist.pkl.gz`, and through an unpickler that accepts nothing but
NumPy arrays (see `_SafeUnpickler`), so a crafted file cannot run code.

Splits (fraction `f = validation_split`):
- `stratified` (the default): `train_test_split(test_size=f, random_state=data_seed,
  stratify=y)`: every class in both parts, in proportion; `data_seed` (default 0) fixes it, so
  a run is reproducible;
- `last`: Keras `validation_split`: `split_at = int(n * (1 - f))`, train `[:split_at]`,
  validation `[split_at:]`, in the order the samples come, before any shuffling (on a
  class-sorted set such as iris or wine the validation part is one class);
- `random`: `train_test_split` without `stratify`;
- `given`: the source's own test set (MNIST formats, npz with `X_test`), `val_label="test"`.

Whatever the split, `balance_problem` says when the held-out part lacks a class the training
part has, or a class's share differs between the parts by more than `MAX_SHARE_GAP`; the
runner stores both parts' class counts (`class_counts_meta`) for the report and the answers.
"""

from __future__ import annotations

import csv
import functools
import gzip
import os
import pickle
import struct
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from lrlab.errors import LrlabError, bad_value
from lrlab.spec import BUNDLED, FILE_PREFIXES, SYNTHETIC, DataSpec

SOURCE_KEY = "[data].source"

# Folders searched, in order, for plain `mnist` / `fashion-mnist` (`$VAR` and `~` expanded,
# relative paths taken from the working directory). In each folder, `mnist` looks for
# `mnist.pkl.gz` (Nielsen's), `mnist.npz` or a `mnist/` folder of IDX files;
# `fashion-mnist` looks for a `fashion-mnist/` folder of IDX files or `fashion-mnist.npz`.
# `/usr/share/datasets/fashion-mnist` is where Debian's `dataset-fashion-mnist` puts its files.
MNIST_SEARCH_PATH: tuple[str, ...] = (
    "$LRLAB_DATA",
    "~/.cache/lrlab",
    "./data",
    "../shared/data",
    "/usr/share/datasets",
)
_SEARCH_NAMES: dict[str, tuple[str, ...]] = {
    "mnist": ("mnist.pkl.gz", "mnist.npz", "mnist"),
    "fashion-mnist": ("fashion-mnist", "fashion-mnist.npz"),
}

_SYNTHETIC_NOISE = {"blobs": 1.0, "moons": 0.1, "circles": 0.05, "spiral": 0.2, "xor": 0.3}
_MAX_SKLEARN_SEED = 2**32 - 1


# ----------------------------------------------------------------------------- the result


@dataclass(frozen=True, eq=False)  # eq=False: compared and hashed by identity (holds arrays)
class Dataset:
    """Train/validation arrays after preprocessing, plus the raw ones and the fitted scaling."""

    name: str
    X_train: np.ndarray  # float32 [n, d], after preprocessing
    y_train: np.ndarray  # int64 [n], labels 0..C-1
    X_val: np.ndarray  # float32 [m, d]; m = 0 when validation_split == 0
    y_val: np.ndarray  # int64 [m]
    n_classes: int
    X_train_raw: np.ndarray  # float32 [n, d], before preprocessing
    X_val_raw: np.ndarray  # float32 [m, d]
    val_label: str = "val"  # "test" when the held-out part is the source's own test set
    feature_names: tuple[str, ...] = ()
    shift: np.ndarray | None = None  # X = (X_raw - shift) / scale; None = identity
    scale: np.ndarray | None = None

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])

    def transform(self, X_raw: np.ndarray) -> np.ndarray:
        """Apply the preprocessing fitted on the training part to new raw samples."""
        X_raw = np.asarray(X_raw)
        if self.shift is None or self.scale is None:
            return X_raw.astype(np.float32, copy=False)
        return ((X_raw.astype(np.float64) - self.shift) / self.scale).astype(np.float32)


@dataclass(frozen=True)
class _Raw:
    """A source as read: all samples in their own order, and its test set when it has one."""

    name: str
    X: np.ndarray  # float32 [n, d]
    y: np.ndarray  # int64 [n]
    n_classes: int
    feature_names: tuple[str, ...] = ()
    X_test: np.ndarray | None = None
    y_test: np.ndarray | None = None


def class_counts(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Samples per class, int64 `[n_classes]`."""
    return np.bincount(np.asarray(y, dtype=np.int64), minlength=n_classes).astype(np.int64)


MAX_SHARE_GAP = 0.20
"""Largest allowed difference between a class's share of the held-out part and of the
training part (20 points); beyond it the held-out loss and accuracy weigh the classes unlike
the data the net was trained on."""

CLASS_COUNTS_KEY = "class_counts"
"""The store's meta key holding both parts' class counts (JSON, see `class_counts_meta`)."""


def _classes(ks: Sequence[int]) -> str:
    names = [str(k) for k in ks]
    word = "class" if len(names) == 1 else "classes"
    return f"{word} {names[0]}" if len(names) == 1 else \
        f"{word} {', '.join(names[:-1])} and {names[-1]}"


def balance_problem(train: Sequence[int], val: Sequence[int], val_label: str = "val") -> str:
    """One sentence on what is wrong with the held-out part's classes; "" when nothing is.

    Wrong: it lacks a class the training part has, or some class's share of it differs from
    the class's share of the training part by more than MAX_SHARE_GAP.

    >>> balance_problem([50, 50, 20], [0, 0, 30])[:60]
    'the validation set lacks classes 0 and 1, which the training'
    >>> balance_problem([40, 40, 40], [10, 10, 10])
    ''
    """
    tr = np.asarray(train, dtype=np.float64)
    va = np.asarray(val, dtype=np.float64)
    if va.sum() == 0 or tr.sum() == 0:
        return ""
    part = "test set" if val_label == "test" else "validation set"
    missing = [k for k in range(len(tr)) if tr[k] > 0 and va[k] == 0]
    gap = va / va.sum() - tr / tr.sum()
    shifted = [k for k in range(len(tr)) if abs(gap[k]) > MAX_SHARE_GAP and k not in missing]
    if not missing and not shifted:
        return ""
    bits = []
    if missing:
        bits.append(f"lacks {_classes(missing)}, which the training set has")
    if shifted:
        k = max(shifted, key=lambda j: abs(gap[j]))
        bits.append(f"class {k} is {100 * va[k] / va.sum():.0f}% of it against "
                    f"{100 * tr[k] / tr.sum():.0f}% of the training set")
    counts = (f"class counts: {part.split()[0]} {[int(x) for x in va]}, training "
              f"{[int(x) for x in tr]}")
    return (f"the {part} {', and '.join(bits)} ({counts}); its loss and accuracy do not "
            "measure what the net learned, so conclusions drawn from them (best lr, "
            "overfitting) are unreliable. split = \"stratified\" keeps every class in both "
            "parts in proportion")


def class_counts_meta(datasets: Mapping[DataSpec, Dataset]) -> str:
    """Both parts' class counts of each distinct dataset of a sweep, as the JSON the store
    keeps under CLASS_COUNTS_KEY: `[{"data": LABEL, "train": [...], "val": [...],
    "val_label": "val"|"test"}, ...]`; LABEL names the data keys that differ ("" for one)."""
    import json

    specs = list(datasets)
    keys = [f.name for f in fields(DataSpec)
            if len({repr(getattr(s, f.name)) for s in specs}) > 1 and f.name != "preprocess"]
    out: list[dict[str, Any]] = []
    for s, ds in datasets.items():
        item = {"data": ", ".join(f"{k}={getattr(s, k)}" for k in keys),
                "train": class_counts(ds.y_train, ds.n_classes).tolist(),
                "val": class_counts(ds.y_val, ds.n_classes).tolist(),
                "val_label": ds.val_label}
        if item not in out:
            out.append(item)
    return json.dumps(out)


def balance_warnings(meta: Mapping[str, str]) -> list[str]:
    """The warning sentences for a store's meta (one per dataset with a problem)."""
    import json

    try:
        items = json.loads(meta.get(CLASS_COUNTS_KEY, "[]"))
    except ValueError:
        return []
    out = []
    for it in items if isinstance(items, list) else []:
        text = balance_problem(it.get("train", []), it.get("val", []), it.get("val_label", "val"))
        if text:
            where = f" ({it['data']})" if it.get("data") else ""
            out.append(f"Warning{where}: {text[0].upper()}{text[1:]}.")
    return out


# ----------------------------------------------------------------------------- entry point


def load(ds: DataSpec) -> Dataset:
    """Load, split, trim and preprocess the data that `ds` describes (memoised)."""
    return _load_cached(ds, _stamp(ds))


@functools.lru_cache(maxsize=8)
def _load_cached(ds: DataSpec, stamp: tuple) -> Dataset:
    raw = _raw_cached(_raw_key(ds), stamp)
    (X_tr, y_tr), (X_va, y_va), val_label = _split(raw, ds)
    if ds.limit is not None:
        X_tr, y_tr = X_tr[: ds.limit], y_tr[: ds.limit]
        X_va, y_va = X_va[: ds.limit], y_va[: ds.limit]
    shift, scale = _fit_preprocess(ds.preprocess, X_tr)
    return Dataset(
        name=raw.name,
        X_train=_apply(X_tr, shift, scale),
        y_train=_frozen(y_tr),
        X_val=_apply(X_va, shift, scale),
        y_val=_frozen(y_va),
        n_classes=raw.n_classes,
        X_train_raw=_frozen(X_tr),
        X_val_raw=_frozen(X_va),
        val_label=val_label,
        feature_names=raw.feature_names,
        shift=None if shift is None else _frozen(shift),
        scale=None if scale is None else _frozen(scale),
    )


def _raw_key(ds: DataSpec) -> DataSpec:
    """The part of the spec that decides the raw samples (so preprocess variants share them)."""
    return replace(ds, preprocess="none", validation_split=0.0, split="last", limit=None)


@functools.lru_cache(maxsize=4)
def _raw_cached(ds: DataSpec, stamp: tuple) -> _Raw:
    raw = _read_source(ds)
    for arr in (raw.X, raw.y, raw.X_test, raw.y_test):
        if arr is not None:
            arr.flags.writeable = False
    return raw


def _stamp(ds: DataSpec) -> tuple:
    """Identify the file behind a file source, so an edited file is read again."""
    path = _source_path(ds.source)
    if path is None:
        return ()
    try:
        st = path.stat()
    except OSError:
        return (str(path),)
    return (str(path.resolve()), st.st_mtime_ns, st.st_size)


def _source_path(source: str) -> Path | None:
    if source in SYNTHETIC + BUNDLED:
        return None
    if source in _SEARCH_NAMES:
        return _search(source)
    return Path(source.partition(":")[2]).expanduser()


def _read_source(ds: DataSpec) -> _Raw:
    source = ds.source
    if source in SYNTHETIC:
        return _synthetic(ds)
    if source in BUNDLED:
        return _bundled(source)
    if source in _SEARCH_NAMES:
        return _mnist_like(source, _search(source), source)
    prefix, _, rest = source.partition(":")
    if prefix not in FILE_PREFIXES or not rest:
        raise bad_value(
            SOURCE_KEY, source, "one of " + ", ".join(SYNTHETIC + BUNDLED)
            + ", mnist, fashion-mnist, or PREFIX:PATH with PREFIX in " + ", ".join(FILE_PREFIXES),
        )
    path = Path(rest).expanduser()
    _check_exists(path, source)
    if prefix in ("csv", "parquet"):
        return _table(source, path, prefix, ds.label_column)
    if prefix == "npz":
        return _npz(source, path, mnist=False)
    return _mnist_like(source, path, prefix)


def _check_exists(path: Path, source: str) -> None:
    if not path.exists():
        raise LrlabError(f"`{SOURCE_KEY}` {source!r}: file {str(path)!r} does not exist")


def _file_error(path: Path, problem: str, allowed: str) -> LrlabError:
    return LrlabError(f"data file {str(path)!r} (`{SOURCE_KEY}`): {problem}; {allowed}")


# ----------------------------------------------------------------------------- synthetic


def _sklearn_seed(seed: int) -> int:
    if seed > _MAX_SKLEARN_SEED:
        raise bad_value("[data].data_seed", seed, f"an integer in [0, {_MAX_SKLEARN_SEED}]")
    return seed


def _synthetic(ds: DataSpec) -> _Raw:
    from sklearn import datasets as skd

    noise = _SYNTHETIC_NOISE[ds.source] if ds.noise is None else float(ds.noise)
    n, name = ds.n, ds.source
    if name == "blobs":
        X, y = skd.make_blobs(
            n_samples=n, centers=ds.classes, n_features=ds.features, cluster_std=noise,
            random_state=_sklearn_seed(ds.data_seed),
        )
        classes = ds.classes
    elif name == "moons":
        X, y = skd.make_moons(n_samples=n, noise=noise, random_state=_sklearn_seed(ds.data_seed))
        classes = 2
    elif name == "circles":
        X, y = skd.make_circles(
            n_samples=n, noise=noise, factor=0.5, random_state=_sklearn_seed(ds.data_seed)
        )
        classes = 2
    elif name == "spiral":
        X, y = spiral(n, ds.classes, noise, ds.data_seed)
        classes = ds.classes
    else:
        X, y = xor(n, noise, ds.data_seed)
        classes = 2
    names = tuple(f"x{i}" for i in range(X.shape[1]))
    return _Raw(name, _f32(X), _i64(y), classes, names)


def _sizes(n: int, parts: int) -> list[int]:
    """Split n into `parts` near-equal counts, larger ones first."""
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def spiral(n: int, classes: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`classes` interleaved spiral arms (CS231n style), angle noise `noise`, shuffled.

    Arm j: radius r in [0, 1], angle = 2*pi*j/classes + 4*r + N(0, noise).
    """
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for j, m in enumerate(_sizes(n, classes)):
        r = np.linspace(0.0, 1.0, m)
        t = 2 * np.pi * j / classes + 4.0 * r + rng.normal(0.0, noise, m)
        xs.append(np.column_stack([r * np.sin(t), r * np.cos(t)]))
        ys.append(np.full(m, j))
    return _shuffled(rng, np.concatenate(xs), np.concatenate(ys))


def xor(n: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Four gaussian blobs (std `noise`) at (+-1, +-1); label 1 where the centre's x*y < 0."""
    rng = np.random.default_rng(seed)
    centres = np.array([[1.0, 1.0], [-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0]])
    xs, ys = [], []
    for c, m in zip(centres, _sizes(n, 4)):
        xs.append(c + rng.normal(0.0, noise, (m, 2)))
        ys.append(np.full(m, int(c[0] * c[1] < 0)))
    return _shuffled(rng, np.concatenate(xs), np.concatenate(ys))


def _shuffled(rng: np.random.Generator, X: np.ndarray, y: np.ndarray):
    order = rng.permutation(len(y))
    return X[order], y[order]


# ----------------------------------------------------------------------------- bundled


def _bundled(name: str) -> _Raw:
    from sklearn import datasets as skd

    bunch = getattr(skd, f"load_{name}")()
    names = tuple(str(f) for f in getattr(bunch, "feature_names", ()))
    return _Raw(name, _f32(bunch.data), _i64(bunch.target), int(np.max(bunch.target)) + 1, names)


# ----------------------------------------------------------------------------- tables


def _read_frame(path: Path, prefix: str):
    import pandas as pd

    try:
        if prefix == "csv":
            df = pd.read_csv(path)
        else:
            return pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise _file_error(path, "is empty", "a CSV file needs a header row and data rows") from None
    except pd.errors.ParserError as exc:
        if prefix == "csv":
            _check_field_counts(path)  # names the row, when that is what is wrong
        msg = str(exc).strip().splitlines()[0]
        raise _file_error(path, f"is not valid CSV ({msg})", "one header row, then one row "
                          "per sample with the same number of fields") from None
    except UnicodeDecodeError:
        raise _file_error(path, "is not UTF-8 text", "a UTF-8 CSV file") from None
    except IsADirectoryError:
        raise _file_error(path, "is a folder", f"a {prefix.upper()} file") from None
    except (OSError, ValueError, ImportError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _file_error(path, f"cannot be read as {prefix.upper()} ({msg})",
                          f"a valid {prefix.upper()} file") from None
    if prefix == "csv":
        _check_header(path, [str(c) for c in df.columns])
        ragged = not isinstance(df.index, pd.RangeIndex)  # a row's extra fields became an index
        if ragged or bool(df.isna().to_numpy().any()):  # a short row's missing fields are NaN
            _check_field_counts(path)
        if ragged:
            raise _file_error(path, "has rows with more fields than its header row",
                              "one header row, then one row per sample with the same number of "
                              "fields")
    return df


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_header(path: Path, columns: list[str]) -> None:
    """A CSV must name its columns: a first row of numbers only is data, not a header."""
    with open(path, encoding="utf-8", newline="") as f:
        first = next(csv.reader(f), [])
    if first and all(_is_number(c.strip()) for c in first):
        shown = ",".join(first[:6]) + (",..." if len(first) > 6 else "")
        raise _file_error(path, f"has no header row (its first row {shown!r} holds only "
                          "numbers)", "a first row naming the columns, e.g. x0,x1,label (the "
                          "label column last, or named by label_column)")


def _check_field_counts(path: Path) -> None:
    """Name the first row whose number of fields differs from the header's."""
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        row_no = 0
        for row in reader:
            if not row:  # a blank line (pandas skips it too)
                continue
            row_no += 1
            if len(row) != len(header):
                fewer = len(row) < len(header)
                raise _file_error(
                    path, f"data row {row_no} (line {reader.line_num}) has {len(row)} field(s) "
                    f"but the header has {len(header)}", "one row per sample with as many "
                    "fields as the header" + (" (an empty value still needs its comma)"
                                              if fewer else ""))


def _table(source: str, path: Path, prefix: str, label_column: str | None) -> _Raw:
    df = _read_frame(path, prefix)
    columns = [str(c) for c in df.columns]
    df.columns = columns
    if len(df) == 0:
        raise _file_error(path, "has no data rows", "a header row followed by one row per sample")
    label = columns[-1] if label_column is None else label_column
    if label not in columns:
        raise bad_value("[data].label_column", label, f"a column of {str(path)!r}: "
                        + ", ".join(map(repr, columns)))
    feats = [c for c in columns if c != label]
    if not feats:
        raise _file_error(path, f"has only the label column {label!r}",
                          "at least one feature column besides the label")
    X = _numeric_features(df[feats], path)
    y_raw = df[label].to_numpy()
    if df[label].isna().any():
        raise _file_error(path, f"label column {label!r} has {int(df[label].isna().sum())} empty "
                          "value(s)", "a label in every row")
    _check_classification_labels(y_raw, f"label column {label!r}", path)
    y, k = _encode_labels(y_raw, path=path)
    return _Raw(source, X, y, k, tuple(feats))


MAX_CLASSES = 1000
"""The most classes a table's label column may hold (as `[data].classes` for synthetic sets)."""


def _check_classification_labels(values: np.ndarray, what: str, path: Path) -> None:
    """lrlab trains classifiers: labels (`what`: "label column 'y'", "array y") of fractional
    numbers (a regression target) or with implausibly many distinct values are refused."""
    values = np.asarray(values)
    if values.dtype.kind == "f":
        frac = np.flatnonzero(np.isfinite(values) & (values != np.round(values)))
        if len(frac):
            raise _file_error(
                path, f"{what} holds fractional numbers (data row {int(frac[0]) + 1} holds "
                f"{float(values[frac[0]]):g}), a regression target", "class labels: names or "
                "integer class ids (lrlab trains classifiers; set label_column if the label is "
                "another column)")
    k = len(np.unique(values.astype(str) if values.dtype == object else values))
    n = len(values)
    if k > MAX_CLASSES or (k > 20 and k > n / 2):
        raise _file_error(
            path, f"{what} has {k} distinct values in {n} rows",
            f"at most {MAX_CLASSES} classes, and at most half as many as rows when more than "
            "20 (is it an id or a continuous target? set label_column to the class column)")


def _numeric_features(frame, path: Path) -> np.ndarray:
    import pandas as pd

    for col in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[col]) or pd.api.types.is_complex_dtype(
            frame[col]
        ):
            coerced = pd.to_numeric(frame[col], errors="coerce")
            bad = np.flatnonzero((coerced.isna() & frame[col].notna()).to_numpy())
            example = (f" (data row {int(bad[0]) + 1} holds {frame[col].iloc[bad[0]]!r})"
                       if len(bad) else "")
            raise _file_error(path, f"feature column {col!r} is not numeric{example}",
                              "every column except the label must hold numbers")
    X = frame.to_numpy(dtype=np.float64)
    _check_finite(X, [str(c) for c in frame.columns], path)
    return _f32(X)


def _check_finite(X: np.ndarray, names: list[str], path: Path) -> None:
    bad = ~np.isfinite(X)
    if not bad.any():
        return
    per_col = bad.sum(axis=0)
    cols = ", ".join(f"{names[j]!r} ({int(per_col[j])})" for j in np.flatnonzero(per_col)[:5])
    rows = int(bad.any(axis=1).sum())
    raise _file_error(path, f"{rows} row(s) hold NaN, Inf or empty feature values, in column(s) "
                      f"{cols}", "finite numbers in every feature (drop or fill those rows)")


def _encode_labels(*ys: np.ndarray, path: Path) -> tuple[np.ndarray, int]:
    """Map labels (strings or numbers) of one or more arrays to 0..C-1 in sorted order.

    Returns the concatenation of the encoded arrays and C.
    """
    allv = np.concatenate([np.asarray(y).ravel() for y in ys])
    if allv.dtype == object:
        allv = allv.astype(str)
    try:
        classes, codes = np.unique(allv, return_inverse=True)
    except TypeError:
        classes, codes = np.unique(allv.astype(str), return_inverse=True)
    if len(classes) < 2:
        shown = repr(classes[0].item()) if len(classes) else "none"
        raise _file_error(path, f"the labels hold only one class ({shown})",
                          "at least two classes")
    return codes.astype(np.int64).ravel(), len(classes)


# ----------------------------------------------------------------------------- npz


def _npz(source: str, path: Path, mnist: bool) -> _Raw:
    arrays = _read_npz(path)
    keys = _npz_keys(arrays, path)
    X = _npz_features(arrays[keys[0]], path, keys[0], mnist)
    y = _npz_labels(arrays[keys[1]], path, keys[1], len(X))
    X_test = y_test = None
    if keys[2] in arrays and keys[3] in arrays:
        X_test = _npz_features(arrays[keys[2]], path, keys[2], mnist)
        y_test = _npz_labels(arrays[keys[3]], path, keys[3], len(X_test))
        if X_test.shape[1] != X.shape[1]:
            raise _file_error(path, f"{keys[2]} has {X_test.shape[1]} features but {keys[0]} has "
                              f"{X.shape[1]}", "the same number of features in both")
    if mnist:
        return _digits(source, X, y, X_test, y_test, path)
    if y_test is None:
        codes, k = _encode_labels(y, path=path)
        return _Raw(source, X, codes, k)
    codes, k = _encode_labels(y, y_test, path=path)
    return _Raw(source, X, codes[: len(y)], k, (), X_test, codes[len(y):])


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not zipfile.is_zipfile(path):
        raise _file_error(path, "is not an .npz (zip) file",
                          "a file written by numpy.savez with arrays X and y")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise _file_error(path, f"is not a readable .npz file ({exc})",
                          "a file written by numpy.savez with arrays X and y") from None
    except ValueError:
        raise _file_error(path, "holds object arrays (which need pickle)",
                          "numeric arrays X and y (lrlab never unpickles .npz files)") from None


def _npz_keys(arrays: dict[str, np.ndarray], path: Path) -> tuple[str, str, str, str]:
    for keys in (("X", "y", "X_test", "y_test"), ("x_train", "y_train", "x_test", "y_test")):
        if keys[0] in arrays and keys[1] in arrays:
            return keys
    raise _file_error(path, "has arrays " + (", ".join(sorted(arrays)) or "none"),
                      "arrays X and y (optionally X_test and y_test)")


def _npz_features(X: np.ndarray, path: Path, key: str, mnist: bool) -> np.ndarray:
    if X.dtype.kind not in "biuf" or X.ndim < 2 or len(X) == 0:
        raise _file_error(path, f"array {key} has dtype {X.dtype} and shape {X.shape}",
                          f"{key} as a non-empty numeric array [n, features]")
    X = X.reshape(len(X), -1)
    if mnist and X.dtype == np.uint8:
        return (X.astype(np.float32) / 256).astype(np.float32)
    _check_finite(X.astype(np.float64), [f"{key}[:, {j}]" for j in range(X.shape[1])], path)
    return _f32(X)


def _npz_labels(y: np.ndarray, path: Path, key: str, n: int) -> np.ndarray:
    y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if y.ndim != 1 or len(y) != n:
        raise _file_error(path, f"array {key} has shape {y.shape}", f"one label per sample ({n},)")
    _check_classification_labels(y, f"array {key}", path)
    return y


# ----------------------------------------------------------------------------- MNIST formats


def _search(name: str) -> Path:
    """Find plain `mnist` / `fashion-mnist` in MNIST_SEARCH_PATH, or say where to put it."""
    tried: list[str] = []
    for folder in _search_dirs():
        for entry in _SEARCH_NAMES[name]:
            candidate = folder / entry
            tried.append(os.path.abspath(candidate))
            if candidate.is_file() or (candidate.is_dir() and _idx_files(candidate, quiet=True)):
                return candidate
    what = ("Nielsen's mnist.pkl.gz, mnist.npz or a mnist/ folder of IDX files" if name == "mnist"
            else "a fashion-mnist/ folder of IDX files (Debian: apt install dataset-fashion-mnist)")
    raise LrlabError(
        f"`{SOURCE_KEY}` {name!r}: no data found (searched " + ", ".join(tried)
        + f"); put {what} in one of those folders, set LRLAB_DATA to its folder, "
        f"or name the file with {name}:PATH (lrlab never downloads)"
    )


def _search_dirs() -> list[Path]:
    out = []
    for entry in MNIST_SEARCH_PATH:
        if entry.startswith("$") and not os.environ.get(entry[1:]):
            continue
        out.append(Path(os.path.expanduser(os.path.expandvars(entry))))
    return out


def _mnist_like(source: str, path: Path, prefix: str) -> _Raw:
    _check_exists(path, source)
    if path.is_dir():
        return _idx_folder(source, path)
    if path.suffix == ".npz":
        return _npz(source, path, mnist=True)
    if prefix == "mnist" and _is_gzip(path):
        return _nielsen(source, path)
    raise _file_error(path, "is neither a folder of IDX files, an .npz nor a gzip file",
                      "Nielsen's mnist.pkl.gz, an .npz, or a folder holding "
                      "train-images-idx3-ubyte[.gz] and the other three IDX files")


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles NumPy arrays and nothing else (the only globals mnist.pkl.gz names)."""

    ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    })

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed")
        return super().find_class(module, name)


def _nielsen(source: str, path: Path) -> _Raw:
    """Nielsen's mnist.pkl.gz: (train, validation, test) of (X, y); train and test are used."""
    allowed = "Nielsen's mnist.pkl.gz: a gzip pickle of (train, validation, test), each (X, y)"
    try:
        with gzip.open(path, "rb") as f:
            parts = _SafeUnpickler(f, encoding="latin1").load()
        (X, y), _validation, (X_test, y_test) = parts
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError,
            AttributeError, ImportError, IndexError) as exc:
        raise _file_error(path, f"cannot be read as mnist.pkl.gz ({exc})", allowed) from None
    X, X_test = _f32(np.asarray(X)), _f32(np.asarray(X_test))
    if X.ndim != 2 or X_test.ndim != 2 or X.shape[1] != X_test.shape[1]:
        raise _file_error(path, f"holds images of shape {X.shape} and {X_test.shape}", allowed)
    return _digits(source, X, np.asarray(y), X_test, np.asarray(y_test), path)


def _digits(source: str, X, y, X_test, y_test, path: Path) -> _Raw:
    """MNIST-style labels keep their values (digit d is class d); C = largest label + 1."""
    labels = [np.asarray(v) for v in (y, y_test) if v is not None]
    for v in labels:
        if v.dtype.kind not in "iu" or (len(v) and v.min() < 0):
            raise _file_error(path, f"labels have dtype {v.dtype}", "integer labels 0..C-1")
    k = max(int(v.max()) + 1 for v in labels if len(v))
    if len(np.unique(np.concatenate(labels))) < 2:
        raise _file_error(path, "the labels hold only one class", "at least two classes")
    names = tuple(f"px{i}" for i in range(X.shape[1]))
    y_test = None if y_test is None else _i64(y_test)
    return _Raw(source, X, _i64(y), k, names, X_test, y_test)


_IDX_STEMS = {
    "train_X": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_y": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_X": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_y": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def _idx_files(folder: Path, quiet: bool = False) -> dict[str, Path]:
    """The four IDX files in `folder` (plain or .gz); {} when quiet and some are missing."""
    found: dict[str, Path] = {}
    for role, stems in _IDX_STEMS.items():
        for stem in stems:
            for name in (stem, stem + ".gz"):
                if (folder / name).is_file():
                    found.setdefault(role, folder / name)
        if role not in found:
            if quiet:
                return {}
            raise _file_error(folder, f"has no {stems[0]}[.gz]", "a folder holding "
                              + ", ".join(s[0] + "[.gz]" for s in _IDX_STEMS.values()))
    return found


def _idx_folder(source: str, folder: Path) -> _Raw:
    files = _idx_files(folder)
    X = read_idx(files["train_X"])
    y = read_idx(files["train_y"])
    X_test = read_idx(files["test_X"])
    y_test = read_idx(files["test_y"])
    for images, labels, name in ((X, y, "train"), (X_test, y_test, "t10k")):
        if images.ndim < 2 or labels.ndim != 1 or len(images) != len(labels):
            raise _file_error(folder, f"{name} images {images.shape} and labels {labels.shape} "
                              "do not match", "one label per image")
    return _digits(source, _pixels(X), y, _pixels(X_test), y_test, folder)


def _pixels(images: np.ndarray) -> np.ndarray:
    """Flatten [n, rows, cols] to [n, rows*cols]; bytes become byte / 256 (as Nielsen's pickle)."""
    flat = images.reshape(len(images), -1)
    if flat.dtype == np.uint8:
        return (flat.astype(np.float32) / 256).astype(np.float32)
    return _f32(flat)


_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (LeCun's MNIST format), gzip-compressed or plain.

    Header: two zero bytes, a type code (0x08 ubyte ... 0x0E double), the number of
    dimensions, then each dimension as a big-endian uint32; the data follows in C order.
    """
    path = Path(path)
    opener: Callable = gzip.open if _is_gzip(path) else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise _file_error(path, f"cannot be read ({exc})", "an IDX file, plain or gzip") from None
    magic = data[:4]
    if len(magic) < 4 or magic[:2] != b"\x00\x00" or magic[2] not in _IDX_TYPES or magic[3] < 1:
        raise _file_error(path, f"has magic number 0x{magic.hex() or 'empty'}",
                          "an IDX file starting 0x0000TTDD (TT a type code such as 08, DD the "
                          "number of dimensions), e.g. 0x00000803 for images")
    ndim = magic[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise _file_error(path, "is truncated inside its header", "a complete IDX file")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_TYPES[magic[2]])
    need = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != need:
        raise _file_error(path, f"holds {len(data) - header} data bytes but its header "
                          f"{shape} needs {need}", "a complete IDX file")
    out = np.frombuffer(data, dtype=dtype, count=int(np.prod(shape)), offset=header)
    return out.reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray, compress: bool | None = None) -> None:
    """Write `array` as an IDX file (gzip when `compress`, default: path ends in .gz)."""
    path = Path(path)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_TYPES.items()}
    a = np.asarray(array)
    code = codes[a.dtype.newbyteorder("=")]
    body = (bytes([0, 0, code, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
            + a.astype(_IDX_TYPES[code]).tobytes())
    compress = path.suffix == ".gz" if compress is None else compress
    with (gzip.open(path, "wb") if compress else open(path, "wb")) as f:
        f.write(body)


# ----------------------------------------------------------------------------- split


def _split(raw: _Raw, ds: DataSpec):
    """((X_train, y_train), (X_val, y_val), val_label) as ds.split and ds.validation_split say."""
    X, y, f = raw.X, raw.y, float(ds.validation_split)
    if ds.split == "given":
        if raw.X_test is None:
            raise bad_value("[data].split", "given", "last, stratified or random for "
                            f"{ds.source!r}, which has no test set of its own")
        return (X, y), (raw.X_test, raw.y_test), "test"
    if f == 0.0:
        return (X, y), (X[:0], y[:0]), "val"
    if ds.split == "last":
        return (*keras_split(X, y, f), "val")
    return (*_sklearn_split(X, y, f, ds), "val")


def keras_split(X: np.ndarray, y: np.ndarray, f: float):
    """Keras `validation_split`: the last fraction f, in order: split_at = int(n * (1 - f))."""
    n = len(y)
    split_at = int(n * (1.0 - f))
    _check_train_left(split_at, n, f)
    return (X[:split_at], y[:split_at]), (X[split_at:], y[split_at:])


def _check_train_left(n_train: int, n: int, f: float) -> None:
    if n_train < 1:
        raise bad_value("[data].validation_split", f,
                        f"a fraction that leaves at least 1 of the {n} samples for training")


def _sklearn_split(X: np.ndarray, y: np.ndarray, f: float, ds: DataSpec):
    from sklearn.model_selection import train_test_split

    n = len(y)
    _check_train_left(n - int(np.ceil(f * n)), n, f)
    stratify = y if ds.split == "stratified" else None
    try:
        X_tr, X_va, y_tr, y_va = train_test_split(
            X, y, test_size=f, random_state=_sklearn_seed(ds.data_seed), stratify=stratify
        )
    except ValueError as exc:
        raise bad_value("[data].split", ds.split, f"a split this data allows with "
                        f"validation_split={f} ({exc}); try split = \"random\" or "
                        "\"last\", or a larger validation_split") from None
    return (X_tr, y_tr), (X_va, y_va)


# ----------------------------------------------------------------------------- preprocess


def _fit_preprocess(kind: str, X: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(shift, scale) fitted on the training features; (None, None) for "none"."""
    if kind == "none":
        return None, None
    X64 = X.astype(np.float64)
    if kind == "standardize":  # sklearn StandardScaler: population std, ~zero std -> 1
        shift, scale = X64.mean(axis=0), X64.std(axis=0)
    elif kind == "minmax":  # sklearn MinMaxScaler to [0, 1]: zero range -> 1
        shift = X64.min(axis=0)
        scale = X64.max(axis=0) - shift
    else:
        raise bad_value("[data].preprocess", kind, "one of none, standardize, minmax")
    scale = np.where(scale < 10 * np.finfo(np.float64).eps, 1.0, scale)
    return shift, scale


def _apply(X: np.ndarray, shift: np.ndarray | None, scale: np.ndarray | None) -> np.ndarray:
    if shift is None or scale is None:
        return _frozen(X)
    return _frozen(((X.astype(np.float64) - shift) / scale).astype(np.float32))


# ----------------------------------------------------------------------------- helpers


def _f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def _i64(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.int64)


def _frozen(a: np.ndarray) -> np.ndarray:
    """A read-only view (the cached arrays are shared between callers)."""
    v = a.view()
    v.flags.writeable = False
    return v
