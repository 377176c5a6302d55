"""lrlab.data against independent references: manual slicing, sklearn, hand-written files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_iris, make_blobs, make_circles, make_moons
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from lrlab import data
from lrlab.data import MNIST_SEARCH_PATH, Dataset, class_counts, load
from lrlab.errors import LrlabError
from lrlab.spec import DataSpec

MNIST_PKL = Path(__file__).parents[2] / "shared/data/mnist.pkl.gz"


def _csv(tmp_path: Path, text: str, name: str = "d.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _table_csv(tmp_path: Path, n: int = 10) -> Path:
    rows = "\n".join(f"{i},{i * i % 7},{'ab'[i % 2]}" for i in range(n))
    return _csv(tmp_path, "a,b,kind\n" + rows + "\n")


# ----------------------------------------------------------------------------- splits


@pytest.mark.parametrize("n", [10, 1000])
def test_keras_split_is_the_last_fraction_in_order(tmp_path: Path, n: int) -> None:
    X = np.arange(2 * n, dtype=np.float32).reshape(n, 2)
    y = np.arange(n) % 3
    p = tmp_path / "d.npz"
    np.savez(p, X=X, y=y)
    d = load(DataSpec(source=f"npz:{p}", validation_split=0.2, split="last"))
    cut = {10: 8, 1000: 800}[n]  # Keras: split_at = int(n * (1 - 0.2))
    np.testing.assert_array_equal(d.X_train_raw, X[:cut])
    np.testing.assert_array_equal(d.X_val_raw, X[cut:])
    np.testing.assert_array_equal(d.y_train, y[:cut])
    np.testing.assert_array_equal(d.y_val, y[cut:])
    assert d.val_label == "val"


def test_keras_split_of_blobs_matches_manual_slicing() -> None:
    X, y = make_blobs(n_samples=10, centers=4, n_features=2, cluster_std=1.0, random_state=0)
    d = load(DataSpec(source="blobs", n=10, classes=4, validation_split=0.2, split="last"))
    np.testing.assert_array_equal(d.X_train_raw, X[:8].astype(np.float32))
    np.testing.assert_array_equal(d.X_val_raw, X[8:].astype(np.float32))
    np.testing.assert_array_equal(d.y_val, y[8:])


def test_stratified_split_equals_sklearn() -> None:
    X, y = load_iris(return_X_y=True)
    ref = train_test_split(X, y, test_size=0.3, random_state=7, stratify=y)
    d = load(DataSpec(source="iris", validation_split=0.3, split="stratified", data_seed=7))
    np.testing.assert_array_equal(d.X_train_raw, ref[0].astype(np.float32))
    np.testing.assert_array_equal(d.X_val_raw, ref[1].astype(np.float32))
    np.testing.assert_array_equal(d.y_train, ref[2])
    np.testing.assert_array_equal(d.y_val, ref[3])
    assert list(class_counts(d.y_val, 3)) == [15, 15, 15]


def test_default_split_is_stratified_and_seeded() -> None:
    """The default keeps every class in both parts in proportion (sklearn's stratified split,
    random_state = data_seed = 0); Keras' "last" stays available and gives iris's tail."""
    X, y = load_iris(return_X_y=True)
    assert DataSpec().split == "stratified" and DataSpec().data_seed == 0
    d = load(DataSpec(source="iris"))
    ref = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
    np.testing.assert_array_equal(d.y_train, ref[2])
    np.testing.assert_array_equal(d.y_val, ref[3])
    assert list(class_counts(d.y_train, 3)) == [40, 40, 40]
    assert list(class_counts(d.y_val, 3)) == [10, 10, 10]
    assert data.balance_problem(class_counts(d.y_train, 3), class_counts(d.y_val, 3)) == ""
    k = load(DataSpec(source="iris", split="last"))
    assert list(class_counts(k.y_train, 3)) == [50, 50, 20]
    assert list(class_counts(k.y_val, 3)) == [0, 0, 30]
    wine = load(DataSpec(source="wine"))
    tr, va = class_counts(wine.y_train, 3), class_counts(wine.y_val, 3)
    assert (va > 0).all() and np.abs(va / va.sum() - tr / tr.sum()).max() < 0.02


def test_balance_problem_flags_a_missing_class_and_a_share_gap_over_20_points() -> None:
    text = data.balance_problem([50, 50, 20], [0, 0, 30])
    assert "lacks classes 0 and 1" in text and "[0, 0, 30]" in text and "[50, 50, 20]" in text
    assert "unreliable" in text
    assert data.balance_problem([50, 50], [3, 7]) == ""  # 70% vs 50%: 20 points, allowed
    gap = data.balance_problem([50, 50], [2, 8])  # 80% vs 50%: 30 points
    assert "class 1 is 80% of it against 50% of the training set" in gap
    assert "lacks" not in gap
    assert data.balance_problem([5, 5], [0, 0]) == ""  # no held-out part, nothing to judge
    assert data.balance_problem([5, 5], [0, 3], "test").startswith("the test set lacks class 0")


def test_class_counts_meta_round_trip_gives_one_warning_per_bad_dataset() -> None:
    good = DataSpec(source="iris")
    bad = DataSpec(source="iris", split="last")
    meta = {data.CLASS_COUNTS_KEY: data.class_counts_meta({good: load(good), bad: load(bad)})}
    warnings = data.balance_warnings(meta)
    assert len(warnings) == 1 and warnings[0].startswith("Warning (split=last): The validation")
    assert data.balance_warnings({}) == [] and data.balance_warnings(
        {data.CLASS_COUNTS_KEY: "not json"}) == []


def test_random_split_equals_seed_004_call() -> None:
    X, y = load_iris(return_X_y=True)
    ref = train_test_split(X, y, test_size=0.25, random_state=42)
    d = load(DataSpec(source="iris", validation_split=0.25, split="random", data_seed=42))
    np.testing.assert_array_equal(d.X_train_raw, ref[0].astype(np.float32))
    np.testing.assert_array_equal(d.y_val, ref[3])
    assert (len(d.y_train), len(d.y_val)) == (112, 38)


def test_zero_split_and_limit() -> None:
    d = load(DataSpec(source="moons", n=100, validation_split=0.0))
    assert d.X_val.shape == (0, 2) and d.y_val.shape == (0,)
    assert len(d.y_train) == 100
    full = load(DataSpec(source="moons", n=100, validation_split=0.5))
    small = load(DataSpec(source="moons", n=100, validation_split=0.5, limit=20))
    np.testing.assert_array_equal(small.X_train_raw, full.X_train_raw[:20])
    np.testing.assert_array_equal(small.X_val_raw, full.X_val_raw[:20])


def test_split_leaving_no_training_sample_is_an_error(tmp_path: Path) -> None:
    p = tmp_path / "d.npz"
    np.savez(p, X=np.zeros((2, 1)), y=np.array([0, 1]))
    with pytest.raises(LrlabError, match=r"validation_split.*0\.6"):
        load(DataSpec(source=f"npz:{p}", validation_split=0.6))


def test_given_split_needs_a_test_set() -> None:
    with pytest.raises(LrlabError, match="split"):
        load(DataSpec(source="iris", split="given"))


# ----------------------------------------------------------------------------- preprocess


def test_standardize_is_fitted_on_train_only() -> None:
    ds = DataSpec(source="blobs", n=400, classes=3, preprocess="standardize")
    d, raw = load(ds), load(DataSpec(source="blobs", n=400, classes=3))
    ref = StandardScaler().fit(raw.X_train)
    np.testing.assert_allclose(d.X_train, ref.transform(raw.X_train), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(d.X_val, ref.transform(raw.X_val), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(d.X_train.mean(axis=0), 0.0, atol=1e-5)
    assert np.abs(d.X_val.mean(axis=0)).max() > 1e-3  # not refitted on validation
    np.testing.assert_allclose(d.transform(raw.X_val_raw), d.X_val, atol=1e-6)
    np.testing.assert_array_equal(d.X_train_raw, raw.X_train_raw)


def test_minmax_is_fitted_on_train_only_and_constant_features_survive(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(size=50), np.full(50, 3.0)])
    y = np.arange(50) % 2
    p = tmp_path / "d.npz"
    np.savez(p, X=X, y=y)
    d = load(DataSpec(source=f"npz:{p}", preprocess="minmax", split="last"))
    ref = MinMaxScaler().fit(X[:40])
    np.testing.assert_allclose(d.X_train, ref.transform(X[:40]), atol=1e-6)
    np.testing.assert_allclose(d.X_val, ref.transform(X[40:]), atol=1e-6)
    assert d.X_train.min() == 0.0 and d.X_train[:, 0].max() == pytest.approx(1.0)
    assert d.scale is not None and d.scale[1] == 1.0


# ----------------------------------------------------------------------------- synthetic, bundled


def test_blobs_equal_make_blobs() -> None:
    ds = DataSpec(source="blobs", n=300, classes=5, features=3, noise=0.7, data_seed=11,
                  validation_split=0.0)
    X, y = make_blobs(n_samples=300, centers=5, n_features=3, cluster_std=0.7, random_state=11)
    d = load(ds)
    np.testing.assert_array_equal(d.X_train, X.astype(np.float32))
    np.testing.assert_array_equal(d.y_train, y)
    assert d.n_classes == 5 and d.feature_names == ("x0", "x1", "x2")


def test_moons_and_circles_equal_sklearn() -> None:
    m = load(DataSpec(source="moons", n=50, data_seed=3, validation_split=0.0))
    np.testing.assert_array_equal(m.X_train, make_moons(50, noise=0.1, random_state=3)[0]
                                  .astype(np.float32))
    c = load(DataSpec(source="circles", n=50, data_seed=3, validation_split=0.0))
    ref = make_circles(50, noise=0.05, factor=0.5, random_state=3)
    np.testing.assert_array_equal(c.X_train, ref[0].astype(np.float32))
    np.testing.assert_array_equal(c.y_train, ref[1])


@pytest.mark.parametrize("source,classes", [("spiral", 3), ("xor", 2)])
def test_own_generators_are_seeded_balanced_and_shuffled(source: str, classes: int) -> None:
    ds = DataSpec(source=source, n=300, classes=3, validation_split=0.0)
    a, b = load(ds), data._read_source(ds)
    np.testing.assert_array_equal(a.X_train, b.X)
    assert a.n_classes == classes and a.X_train.shape == (300, 2)
    assert set(class_counts(a.y_train, classes)) == {300 // classes}
    assert len(set(a.y_train[:30])) == classes  # shuffled, so a Keras tail split is mixed
    other = load(DataSpec(source=source, n=300, classes=3, data_seed=1, validation_split=0.0))
    assert not np.array_equal(a.X_train, other.X_train)


def test_xor_labels_follow_the_sign_product_of_the_centres() -> None:
    d = load(DataSpec(source="xor", n=400, noise=0.05, validation_split=0.0))
    X, y = d.X_train, d.y_train
    np.testing.assert_array_equal(y, (X[:, 0] * X[:, 1] < 0).astype(np.int64))


@pytest.mark.parametrize("name,shape,k", [("iris", (150, 4), 3), ("wine", (178, 13), 3),
                                          ("digits", (1797, 64), 10),
                                          ("breast_cancer", (569, 30), 2)])
def test_bundled_sets(name: str, shape: tuple[int, int], k: int) -> None:
    d = load(DataSpec(source=name, validation_split=0.0))
    assert d.X_train.shape == shape and d.n_classes == k
    assert d.X_train.dtype == np.float32 and d.y_train.dtype == np.int64
    assert len(d.feature_names) == shape[1]


def test_load_is_memoised_and_read_only() -> None:
    ds = DataSpec(source="blobs", n=100, preprocess="standardize")
    d = load(ds)
    assert load(ds) is d and isinstance(d, Dataset)
    for arr in (d.X_train, d.y_train, d.X_val, d.y_val, d.X_train_raw, d.shift):
        assert not arr.flags.writeable
    with pytest.raises(ValueError):
        d.X_train[0, 0] = 1.0


def test_an_edited_file_is_read_again(tmp_path: Path) -> None:
    p = _csv(tmp_path, "a,y\n1,0\n2,1\n")
    ds = DataSpec(source=f"csv:{p}", validation_split=0.0)
    assert len(load(ds).y_train) == 2
    p.write_text("a,y\n1,0\n2,1\n3,1\n")
    assert len(load(ds).y_train) == 3


# ----------------------------------------------------------------------------- CSV / Parquet


def test_csv_string_labels_map_to_sorted_codes(tmp_path: Path) -> None:
    p = _csv(tmp_path, "x,y,species\n1,2,setosa\n3,4,virginica\n5,6,setosa\n7,8,versicolor\n")
    before = p.read_bytes()
    d = load(DataSpec(source=f"csv:{p}", validation_split=0.0))
    np.testing.assert_array_equal(d.y_train, [0, 2, 0, 1])
    np.testing.assert_array_equal(d.X_train, [[1, 2], [3, 4], [5, 6], [7, 8]])
    assert d.n_classes == 3 and d.feature_names == ("x", "y") and d.name == f"csv:{p}"
    assert p.read_bytes() == before


def test_csv_label_column_by_name(tmp_path: Path) -> None:
    p = _csv(tmp_path, "label,a,b\n5,0.5,1\n7,1.5,2\n5,2.5,3\n")
    d = load(DataSpec(source=f"csv:{p}", label_column="label", validation_split=0.0))
    np.testing.assert_array_equal(d.y_train, [0, 1, 0])
    assert d.feature_names == ("a", "b")


def test_csv_unknown_label_column_lists_the_columns(tmp_path: Path) -> None:
    p = _table_csv(tmp_path)
    with pytest.raises(LrlabError, match="label_column") as e:
        load(DataSpec(source=f"csv:{p}", label_column="target"))
    assert "'target'" in str(e.value) and "'kind'" in str(e.value) and "'a'" in str(e.value)


def test_csv_nan_names_the_column_and_rows(tmp_path: Path) -> None:
    p = _csv(tmp_path, "a,b,c\n1,2,0\n1,,1\n3,nan,0\n4,5,1\n")
    with pytest.raises(LrlabError) as e:
        load(DataSpec(source=f"csv:{p}"))
    msg = str(e.value)
    assert "d.csv" in msg and "'b'" in msg and "2 row(s)" in msg and "NaN" in msg


def test_csv_non_numeric_feature_is_named(tmp_path: Path) -> None:
    p = _csv(tmp_path, "a,color,y\n1,2,0\n2,red,1\n")
    with pytest.raises(LrlabError) as e:
        load(DataSpec(source=f"csv:{p}"))
    msg = str(e.value)
    assert "'color'" in msg and "'red'" in msg and "not numeric" in msg and "d.csv" in msg


def test_csv_one_class_is_an_error(tmp_path: Path) -> None:
    p = _csv(tmp_path, "a,y\n1,cat\n2,cat\n")
    with pytest.raises(LrlabError, match="one class") as e:
        load(DataSpec(source=f"csv:{p}"))
    assert "'cat'" in str(e.value)


@pytest.mark.parametrize("text,needle", [("", "empty"), ("a,b\n", "no data rows"),
                                         ("y\n1\n2\n", "only the label column")])
def test_csv_degenerate_files(tmp_path: Path, text: str, needle: str) -> None:
    p = _csv(tmp_path, text)
    with pytest.raises(LrlabError, match=needle) as e:
        load(DataSpec(source=f"csv:{p}"))
    assert "d.csv" in str(e.value)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    for prefix in ("csv", "npz", "parquet", "mnist"):
        src = f"{prefix}:{tmp_path / 'nope.dat'}"
        with pytest.raises(LrlabError, match="does not exist") as e:
            load(DataSpec(source=src))
        assert "nope.dat" in str(e.value) and "[data].source" in str(e.value)


def test_parquet_like_csv(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    p = tmp_path / "d.parquet"
    pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [0, 1, 0, 1], "t": ["n", "y", "n", "y"]}) \
        .to_parquet(p)
    d = load(DataSpec(source=f"parquet:{p}", validation_split=0.25, split="last"))
    np.testing.assert_array_equal(d.X_train, [[1, 0], [2, 1], [3, 0]])
    np.testing.assert_array_equal(d.y_val, [1])
    bad = _csv(tmp_path, "not parquet", "bad.parquet")
    with pytest.raises(LrlabError, match="bad.parquet"):
        load(DataSpec(source=f"parquet:{bad}"))


# ----------------------------------------------------------------------------- NPZ


def test_npz_with_test_set_and_label_mapping(tmp_path: Path) -> None:
    p = tmp_path / "d.npz"
    X, y = np.arange(12.0).reshape(6, 2), np.array([3, 5, 3, 5, 3, 9])
    np.savez(p, X=X, y=y, X_test=X[:2] + 100, y_test=np.array([9, 5]))
    d = load(DataSpec(source=f"npz:{p}", split="given"))
    np.testing.assert_array_equal(d.y_train, [0, 1, 0, 1, 0, 2])
    np.testing.assert_array_equal(d.y_val, [2, 1])
    np.testing.assert_array_equal(d.X_val, X[:2] + 100)
    assert d.val_label == "test" and d.n_classes == 3


def test_npz_errors(tmp_path: Path) -> None:
    p = tmp_path / "d.npz"
    np.savez(p, features=np.zeros((3, 2)), y=np.zeros(3))
    with pytest.raises(LrlabError, match="features"):
        load(DataSpec(source=f"npz:{p}"))
    q = _csv(tmp_path, "plain text", "e.npz")
    with pytest.raises(LrlabError, match="e.npz"):
        load(DataSpec(source=f"npz:{q}"))
    r = tmp_path / "inf.npz"
    np.savez(r, X=np.array([[1.0, np.inf], [2.0, 3.0]]), y=np.array([0, 1]))
    with pytest.raises(LrlabError, match="Inf"):
        load(DataSpec(source=f"npz:{r}"))


# ----------------------------------------------------------------------------- IDX / MNIST


def _write_idx_folder(folder: Path, gz: bool, rng: np.random.Generator) -> dict[str, np.ndarray]:
    folder.mkdir()
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (12, 3, 4), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(12, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (5, 3, 4), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.array([9, 0, 1, 2, 3], dtype=np.uint8),
    }
    for name, a in arrays.items():  # written by hand: the reader is checked against the format
        body = bytes([0, 0, 8, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(body))
        else:
            (folder / name).write_bytes(body)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder_round_trip(tmp_path: Path, gz: bool) -> None:
    a = _write_idx_folder(tmp_path / "m", gz, np.random.default_rng(int(gz)))
    d = load(DataSpec(source=f"mnist:{tmp_path / 'm'}", split="given"))
    np.testing.assert_array_equal(d.X_train, a["train-images-idx3-ubyte"].reshape(12, 12) / 256)
    np.testing.assert_array_equal(d.y_train, a["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(d.X_val, a["t10k-images-idx3-ubyte"].reshape(5, 12) / 256)
    np.testing.assert_array_equal(d.y_val, [9, 0, 1, 2, 3])
    assert d.n_classes == 10 and d.val_label == "test" and d.X_train.dtype == np.float32
    f = load(DataSpec(source=f"fashion-mnist:{tmp_path / 'm'}", validation_split=0.25,
                        split="last"))
    assert (len(f.y_train), len(f.y_val), f.val_label) == (9, 3, "val")


def test_idx_write_read_round_trip(tmp_path: Path) -> None:
    for dtype in (np.uint8, np.int16, np.int32, np.float32, np.float64):
        a = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype) if dtype != np.uint8 \
            else np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
        for name in ("a.idx", "a.idx.gz"):
            data.write_idx(tmp_path / name, a)
            b = data.read_idx(tmp_path / name)
            assert b.dtype == a.dtype
            np.testing.assert_array_equal(a, b)


def test_idx_wrong_magic_number(tmp_path: Path) -> None:
    _write_idx_folder(tmp_path / "m", False, np.random.default_rng(0))
    bad = tmp_path / "m" / "train-labels-idx1-ubyte"
    bad.write_bytes(b"\x12\x34\x08\x01" + bad.read_bytes()[4:])
    with pytest.raises(LrlabError, match="magic number 0x12340801") as e:
        load(DataSpec(source=f"mnist:{tmp_path / 'm'}"))
    assert "train-labels-idx1-ubyte" in str(e.value)


def test_idx_truncated_and_missing_files(tmp_path: Path) -> None:
    _write_idx_folder(tmp_path / "m", False, np.random.default_rng(0))
    img = tmp_path / "m" / "t10k-images-idx3-ubyte"
    img.write_bytes(img.read_bytes()[:-1])
    with pytest.raises(LrlabError, match="t10k-images"):
        load(DataSpec(source=f"mnist:{tmp_path / 'm'}"))
    img.unlink()
    with pytest.raises(LrlabError, match="t10k-images-idx3-ubyte"):
        load(DataSpec(source=f"mnist:{tmp_path / 'm'}"))


def test_mnist_npz_keras_layout(tmp_path: Path) -> None:
    p = tmp_path / "mnist.npz"
    x = np.random.default_rng(0).integers(0, 256, (8, 2, 2), dtype=np.uint8)
    np.savez(p, x_train=x, y_train=np.arange(8) % 4, x_test=x[:3], y_test=np.array([0, 1, 2]))
    d = load(DataSpec(source=f"mnist:{p}", split="given"))
    np.testing.assert_array_equal(d.X_train, x.reshape(8, 4) / 256)
    assert d.n_classes == 4 and len(d.y_val) == 3


def test_plain_mnist_searches_the_documented_path(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(data, "MNIST_SEARCH_PATH", ("$LRLAB_DATA", str(tmp_path / "nowhere")))
    monkeypatch.setenv("LRLAB_DATA", str(tmp_path))
    with pytest.raises(LrlabError, match="LRLAB_DATA") as e:
        load(DataSpec(source="fashion-mnist"))
    assert str(tmp_path / "nowhere" / "fashion-mnist") in str(e.value)
    assert "never downloads" in str(e.value)
    _write_idx_folder(tmp_path / "fashion-mnist", True, np.random.default_rng(0))
    d = load(DataSpec(source="fashion-mnist", split="given"))
    assert d.X_train.shape == (12, 12) and d.name == "fashion-mnist"
    assert "/usr/share/datasets" in MNIST_SEARCH_PATH  # Debian's dataset-fashion-mnist


def test_pickle_refuses_anything_but_arrays(tmp_path: Path) -> None:
    import pickle

    p = tmp_path / "evil.pkl.gz"
    with gzip.open(p, "wb") as f:
        pickle.dump(((np.zeros((2, 2)), [0, 1]), None, (print, [0])), f, protocol=2)
    with pytest.raises(LrlabError, match="evil.pkl.gz"):
        load(DataSpec(source=f"mnist:{p}"))


@pytest.mark.skipif(not MNIST_PKL.exists(), reason="shared/data/mnist.pkl.gz not present")
def test_nielsen_mnist_pkl_gz() -> None:
    d = load(DataSpec(source=f"mnist:{MNIST_PKL}", split="given"))
    assert d.X_train.shape == (50000, 784) and d.X_train.dtype == np.float32
    assert d.X_val.shape == (10000, 784) and d.val_label == "test" and d.n_classes == 10
    assert list(class_counts(d.y_val, 10)) == [980, 1135, 1032, 1010, 982, 892, 958, 1028,
                                               974, 1009]
    assert float(d.X_train.max()) == 255 / 256
    # other splits cut the 50,000 training images (raw arrays are shared, not re-read)
    k = load(DataSpec(source=f"mnist:{MNIST_PKL}", validation_split=0.2, split="last", limit=100))
    assert (len(k.y_train), len(k.y_val)) == (100, 100)
    np.testing.assert_array_equal(k.X_val_raw, d.X_train_raw[40000:40100])
