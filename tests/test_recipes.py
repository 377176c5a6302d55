"""Recipes: every seed scenario runs end to end (`--smoke`), `list`/`show` work and `show` is a
spec `lrlab sweep` accepts, and each recipe keeps its original framework's semantics, checked
against independent code written here: Nielsen's update_mini_batch in numpy, Keras'
validation_split, time-based decay and glorot_uniform, sklearn's data and splits.

The gradient check of the seed-001 network (db1 flagged, the corrected copy passing) is tested
in tests/test_gradcheck.py; here the tanh-fullbatch recipe's answer is checked to include it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import tomllib
from typer.testing import CliRunner

from lrlab import cli, data, engine, nets, recipes, runner
from lrlab import spec as spec_mod
from lrlab.recipes import answers
from lrlab.store import Store

cli_runner = CliRunner()
ALL = recipes.names()
MNIST = ("mnist-nielsen", "mnist-break-recover")


def _invoke(args: list[str]):
    return cli_runner.invoke(cli.app, args)


# ----------------------------------------------------------------------------- the catalogue


def test_every_registered_recipe_has_a_file_and_every_seed_is_covered():
    assert set(recipes.REGISTRY) == set(ALL)
    assert {recipes.get(n).seed for n in ALL} == {"000", "001", "002", "003", "004"}
    for name in ALL:
        assert recipes.load(name)["name"] == name


def test_list_names_every_recipe_with_its_seed_and_size():
    res = _invoke(["recipes", "list"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    for name in ALL:
        line = next(x for x in lines if x.startswith(name + " "))
        n = len(spec_mod.members(recipes.spec(name)))
        assert f"seed {recipes.get(name).seed}" in line and f"{n} runs" in line


@pytest.mark.parametrize("name", ALL)
def test_show_prints_a_spec_that_lrlab_sweep_accepts(name, tmp_path, monkeypatch):
    res = _invoke(["recipes", "show", name])
    assert res.exit_code == 0, res.output
    assert res.output.startswith(f"# {name}")
    f = tmp_path / "copy.toml"
    f.write_text(res.output, encoding="utf-8")
    assert tomllib.loads(res.output)["name"] == name
    seen = {}
    monkeypatch.setattr(cli, "run_sweep", lambda spec, *a: seen.setdefault("spec", spec))
    res = _invoke(["sweep", str(f)])
    assert res.exit_code == 0, res.output
    assert seen["spec"] == recipes.spec(name)


def test_bad_recipe_name_and_flags_are_one_line_exit_2(tmp_path):
    res = _invoke(["recipes", "show", "blobs"])
    assert res.exit_code == 2
    assert "`recipe` must be one of blobs-deep-relu" in res.output
    res = _invoke(["recipes", "run", "iris-keras", "--seeds", "0", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "`--seeds` must be an integer >= 1; got 0" in res.output
    assert not (tmp_path / "x").exists()


def test_mnist_recipe_without_data_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "MNIST_SEARCH_PATH", (str(tmp_path / "nowhere"),))
    out = tmp_path / "run"
    res = _invoke(["recipes", "run", "mnist-nielsen", "--smoke", "--quiet", "--out", str(out)])
    assert res.exit_code == 2
    assert "no data found" in res.output and "mnist.pkl.gz" in res.output
    assert "lrlab never downloads" in res.output and not out.exists()


def test_flags_reach_every_phase_and_the_data():
    s = recipes.spec("mnist-break-recover", epochs=4, seeds=2, data="fashion-mnist")
    assert s.train.epochs == 4 and s.phases[0].overrides and dict(s.phases[0].overrides)[
        "epochs"] == 4
    assert s.seeds == (0, 1) and s.data.source == "fashion-mnist"
    m = spec_mod.members(s)[0]
    assert (m.train.lr, m.train.batch_size) == (300.0, 5000)
    assert (m.phases[0].lr, m.phases[0].batch_size, m.phases[0].epochs) == (3.0, 10, 4)
    smoke = recipes.spec("schedules-tour", smoke=True, epochs=3)
    assert smoke.train.epochs == 3 and smoke.seeds == (0,)


# ----------------------------------------------------------------------------- end to end


EXPECT = {
    "blobs-deep-relu": ["Direct answer", "- lr 0.5: ", "- lr 0.001: ", "- Standardizing ",
                        "1-class", "dead layer", "spread 0", "Sample order (shuffle)",
                        "lrlab's verdicts"],
    "blobs-10": ["1-class", "plateau", "lrlab's verdicts"],
    "tanh-fullbatch": ["b1", "WRONG", "all arrays ok", "The early spike"],
    "mnist-nielsen": ["Epoch 0: ", "Epoch 1: ", "after epoch 1 ('Epoch 0')"],
    "mnist-break-recover": ["phase 1 (break)", "phase 2 (recover)", "broken+recovered",
                            "fresh init"],
    "iris-keras": ["Learning Rate: 0.200000 Test Accuracy: ", "keras_loss_2x2.png"],
    "iris-keras-decay": ["Learning Rate: 0.010000 Test Accuracy: ", "lr at the last step"],
    "schedules-tour": ["Validation-based selection", "Selected: "],
}


@pytest.mark.parametrize("name", ALL)
def test_every_recipe_runs_with_smoke_and_writes_report_and_answer(name, tmp_path, request):
    args = ["recipes", "run", name, "--smoke", "--quiet", "--out", str(tmp_path / name)]
    data_flag = None
    if name in MNIST:
        data_flag = "mnist:" + str(request.getfixturevalue("mnist_pkl"))
        args += ["--data", data_flag]
    res = _invoke(args)
    assert res.exit_code == 0, res.output
    d = tmp_path / name
    assert (d / "report.html").stat().st_size > 1000
    answer = (d / recipes.ANSWER_FILE).read_text(encoding="utf-8")
    assert answer.startswith(f"== {name}")
    for words in EXPECT[name]:
        assert words in answer and words in res.output, words
    if name.startswith("iris"):
        assert (d / "keras_loss_2x2.png").stat().st_size > 1000
    if name in SHORT:
        _check_short(name, d, answer, res.output)
    stored = runner.Result.load(d).spec
    assert stored == recipes.spec(name, smoke=True, data=data_flag)
    recs = runner.Result.load(d).records()
    assert len(recs) == len(spec_mod.members(stored)) and all(r["verdict"] for r in recs)
    if name in MNIST:  # Nielsen's printout: one line per epoch, N out of the test-set size
        n = 500
        lines = [x.strip() for x in answer.splitlines() if x.strip().startswith("Epoch ")]
        per_member = sum(p.epochs for p in (stored.train, *spec_mod.members(stored)[0].phases))
        assert len(lines) == per_member * len(recs)
        r = recs[0]
        acc = r["history"]["val_acc"][1]
        assert f"Epoch 0: {int(round(acc * n))} / {n}" in answer


# ----------------------------------------------------------------------------- short answers


SHORT = {  # the line that answers each sub-question of the seed (seed 000: its own test)
    "tanh-fullbatch": ["Why the loss rises:", "Larger initial weights:", "Wrong gradients? Yes"],
    "mnist-nielsen": ["Accurate after one epoch:", "Why so fast:"],
    "mnist-break-recover": ["No recovery:", "Why:", "Not a local minimum"],
    "iris-keras": ["Test accuracy after", "Best: lr"],
    "iris-keras-decay": ["Test accuracy after", "Best: lr", "Decay:"],
    "schedules-tour": ["Winner on median final validation loss:", "Best per family:"],
}


def _short(answer: str) -> list[str]:
    """The answer's first paragraph after its title, warnings left out."""
    out = []
    for line in answer.splitlines()[1:]:
        if not line.strip():
            break
        if not line.startswith("Warning"):
            out.append(line)
    return out


def _med(xs) -> float:
    return float(np.median([x for x in xs if x is not None]))


def _expected_numbers(name: str, d) -> list[str]:
    """Numbers the short answer must quote, computed here from the stored records."""
    recs = runner.Result.load(d).records()
    if name == "tanh-fullbatch":
        g = [r for r in recs if r["member"]["lr"] == 1.0 and r["member"]["init_scale"] == 1.0]
        return [f"at lr 1 the training loss rose above its start "
                f"({_med(r['history']['train_loss'][0] for r in g):.3g})", "b1 (relative error"]
    if name == "mnist-nielsen":
        return [f"'Epoch 0' classifies {round(recs[0]['history']['val_acc'][1] * 500)} / 500"]
    if name == "mnist-break-recover":
        h = recs[0]["history"]
        broken = [a for a, p, e in zip(h["val_acc"], h["phase"], h["epoch"]) if p == 0 and e]
        return [f"leaves the net at {round(broken[-1] * 500)} / 500"]
    if name.startswith("iris"):
        acc = {lr: _med(r["final"]["val_acc"] for r in recs if r["member"]["lr"] == lr)
               for lr in (0.2, 0.1, 0.03, 0.01)}
        out = [f"{lr:g}: {100 * a:.1f}%" for lr, a in acc.items()]
        if name == "iris-keras-decay":
            store = Store.open(d)
            try:
                lrs = store.series(0)["lr"]
            finally:
                store.close()
            out.append(f"the lr is {lrs[-1] / lrs[0]:.3g} x its start")
        return out
    configs: dict[str, list[float]] = {}
    for r in recs:
        key = repr(sorted((k, str(v)) for k, v in r["member"].items() if k != "seed"))
        configs.setdefault(key, []).append(r["final"]["val_loss"])
    return [f"val loss {min(_med(v) for v in configs.values()):.3g}"]


def _check_short(name: str, d, answer: str, output: str) -> None:
    """At most ~120 words, a line per sub-question, numbers that match the store, printed in
    the terminal and leading the report's answer box."""
    import html

    short = _short(answer)
    assert short and sum(len(x.split()) for x in short) <= answers.SHORT_WORDS, short
    for head in SHORT[name]:
        assert any(x.startswith(head) for x in short), (head, short)
    text = " ".join(short)
    for number in _expected_numbers(name, d):
        assert number in text, (number, text)
    assert all(x in output for x in short)
    assert not any(x.startswith("Warning") for x in answer.splitlines())  # balanced splits
    page = (d / "report.html").read_text(encoding="utf-8")
    box = page[page.index("<section id='answer'>"):]
    box = box[: box.index("</section>")]
    assert box.index("class=headline>") == box.index("class=headline>Short answer")
    assert all(html.escape(x.strip(), quote=True) in box for x in short)


def test_class_mismatch_is_warned_in_terminal_report_and_answer(tmp_path):
    """Iris with Keras' "last" split validates on class 2 only: the terminal, report.html and
    answer.txt say so with the class counts; the stratified default says nothing."""
    base = ["sweep", "--data", "iris", "--model", "4-8-3", "--lr", "0.1", "--epochs", "2",
            "--seeds", "1", "--no-probes", "--quiet"]
    res = _invoke(base + ["--split", "last", "--out", str(tmp_path / "last")])
    assert res.exit_code == 0, res.output
    flat = " ".join(res.output.split())
    assert "Warning: The validation set lacks classes 0 and 1" in flat
    assert "(class counts: validation [0, 0, 30], training [50, 50, 20])" in flat
    assert flat.index("Warning:") < flat.index("val loss (median)")
    assert cli.UNRELIABLE_NOTE in flat
    page = (tmp_path / "last" / "report.html").read_text(encoding="utf-8")
    assert "Validation data unlike the training data" in page and "[0, 0, 30]" in page
    assert page.index("Validation data unlike") < page.index("class=headline>")
    res = _invoke(base + ["--out", str(tmp_path / "strat")])
    assert res.exit_code == 0 and "Warning" not in res.output and "unreliable" not in res.output
    page = (tmp_path / "strat" / "report.html").read_text(encoding="utf-8")
    assert "Validation data unlike" not in page

    run = recipes.run("iris-keras", tmp_path / "rk", smoke=True,
                      extra={"data": {"split": "last"}, "run": {"probes": False}})
    lines = (run.directory / recipes.ANSWER_FILE).read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("== iris-keras")
    assert lines[1].startswith("Warning: The validation set lacks classes 0 and 1")
    assert "validation [0, 0, 38], training [50, 50, 12]" in lines[1]
    assert answers.UNRELIABLE in lines  # the short answer says its numbers are unreliable
    assert any("behind this recommendation are unreliable" in x for x in lines)
    page = (run.directory / "report.html").read_text(encoding="utf-8")
    assert "Validation data unlike" in page and "[0, 0, 38]" in page
    # a store written before the class counts were kept: the report recounts from the data
    import sqlite3

    with sqlite3.connect(run.directory / "lrlab.sqlite") as con:
        con.execute("DELETE FROM meta WHERE key = ?", (data.CLASS_COUNTS_KEY,))
    con.close()
    res = _invoke(["report", str(run.directory)])
    assert res.exit_code == 0, res.output
    page = (run.directory / "report.html").read_text(encoding="utf-8")
    assert "Validation data unlike" in page and "[0, 0, 38]" in page


def test_break_recover_history_has_both_phases(tmp_path, mnist_pkl):
    run = recipes.run("mnist-break-recover", tmp_path / "br", smoke=True,
                      data=f"mnist:{mnist_pkl}", extra={"run": {"probes": False}})
    h = run.result.records()[0]["history"]
    assert h["phase"][1:] == [0.0, 0.0, 1.0, 1.0]
    # phase 1 at batch 250 over 500 samples: 2 steps/epoch; phase 2 at batch 10: 50 steps/epoch
    store = Store.open(run.directory)
    try:
        lrs = store.series(0)["lr"]
    finally:
        store.close()
    assert lrs == [300.0] * 4 + [3.0] * 100


# ----------------------------------------------------------------------------- Nielsen


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _nielsen_update_mini_batch(weights, biases, mini_batch, eta):
    """network.py's update_mini_batch + backprop, per sample, column vectors (Nielsen's code)."""
    nabla_b = [np.zeros(b.shape) for b in biases]
    nabla_w = [np.zeros(w.shape) for w in weights]
    for x, y in mini_batch:
        activation, activations, zs = x, [x], []
        for b, w in zip(biases, weights):
            z = np.dot(w, activation) + b
            zs.append(z)
            activation = _sigmoid(z)
            activations.append(activation)
        delta = (activations[-1] - y) * _sigmoid(zs[-1]) * (1 - _sigmoid(zs[-1]))
        d_b = [None] * len(biases)
        d_w = [None] * len(weights)
        d_b[-1] = delta
        d_w[-1] = np.dot(delta, activations[-2].transpose())
        for k in range(2, len(weights) + 1):
            sp = _sigmoid(zs[-k]) * (1 - _sigmoid(zs[-k]))
            delta = np.dot(weights[-k + 1].transpose(), delta) * sp
            d_b[-k] = delta
            d_w[-k] = np.dot(delta, activations[-k - 1].transpose())
        nabla_b = [nb + dnb for nb, dnb in zip(nabla_b, d_b)]
        nabla_w = [nw + dnw for nw, dnw in zip(nabla_w, d_w)]
    weights = [w - (eta / len(mini_batch)) * nw for w, nw in zip(weights, nabla_w)]
    biases = [b - (eta / len(mini_batch)) * nb for b, nb in zip(biases, nabla_b)]
    return weights, biases


def _vectorized_result(j):
    e = np.zeros((10, 1))
    e[j] = 1.0
    return e


def test_nielsen_epoch_equals_handwritten_update_mini_batch(tmp_path):
    """Three mini-batches of 10 (one epoch over 30 images) of the mnist-nielsen recipe equal
    Nielsen's update_mini_batch applied in the same shuffled order, to 1e-6."""
    rng = np.random.default_rng(7)
    X = (rng.integers(0, 256, (30, 784)) / 256).astype(np.float32)
    y = np.arange(30) % 10
    f = tmp_path / "tiny.npz"
    np.savez(f, X=X, y=y, X_test=X[:10], y_test=y[:10])
    s = recipes.spec("mnist-nielsen", epochs=1, seeds=1, data=f"mnist:{f}",
                     extra={"run": {"dtype": "float64", "probes": False}})
    assert (s.train.lr, s.train.batch_size, s.model.output, s.model.init) == (
        3.0, 10, "quadratic", "nielsen")
    res = runner.sweep(s, tmp_path / "run", report=False)
    store = Store.open(res.directory)
    try:
        got = store.weights(0)
    finally:
        store.close()
    m = spec_mod.members(s)[0]
    ds = data.load(m.data)
    arch = nets.arch_for(m.model, 784, 10)
    init = [p.numpy() for p in nets.init_member(arch, m.model, m.seed)]
    # lrlab W: [fan_in, fan_out], b: [1, fan_out]; Nielsen w: [out, in], b: [out, 1]
    weights = [init[0].T.copy(), init[2].T.copy()]
    biases = [init[1].T.copy(), init[3].T.copy()]
    training_data = [(ds.X_train[i].astype(np.float64).reshape(784, 1),
                      _vectorized_result(ds.y_train[i])) for i in range(30)]
    order = engine.epoch_order(m.seed, 1, 30)  # the member's shuffle of epoch 1
    shuffled = [training_data[i] for i in order]
    for k in range(0, 30, 10):
        weights, biases = _nielsen_update_mini_batch(weights, biases, shuffled[k:k + 10], 3.0)
    np.testing.assert_allclose(got[0], weights[0].T, atol=1e-6, rtol=0)
    np.testing.assert_allclose(got[1], biases[0].T, atol=1e-6, rtol=0)
    np.testing.assert_allclose(got[2], weights[1].T, atol=1e-6, rtol=0)
    np.testing.assert_allclose(got[3], biases[1].T, atol=1e-6, rtol=0)
    assert np.abs(got[0] - init[0]).max() > 1e-3  # the step moved the weights


def test_nielsen_init_is_standard_normal_weights_and_biases():
    m = spec_mod.members(recipes.spec("mnist-nielsen"))[0]
    w1, b1, w2, b2 = nets.init_member(nets.arch_for(m.model, 784, 10), m.model, 0)
    assert w1.shape == (784, 20) and w2.shape == (20, 10)
    assert abs(float(w1.mean())) < 0.03 and abs(float(w1.std()) - 1) < 0.03
    both_b = np.concatenate([b1.numpy().ravel(), b2.numpy().ravel()])
    assert 0.5 < both_b.std() < 1.5  # biases are drawn too, not zero


# ----------------------------------------------------------------------------- Keras


def test_keras_validation_split_takes_the_last_fraction():
    from sklearn.datasets import make_blobs

    for name, n, n_train in (("blobs-deep-relu", 1000, 800), ("blobs-10", 10, 8)):
        m = spec_mod.members(recipes.spec(name))[0]
        ds = data.load(m.data)
        X, y = make_blobs(n_samples=n, centers=4, n_features=2, random_state=0)
        split_at = int(n * (1 - 0.2))  # keras: split_at = int(len(x) * (1. - validation_split))
        assert split_at == n_train == len(ds.y_train)
        np.testing.assert_allclose(ds.X_train_raw, X[:split_at], rtol=1e-6)
        np.testing.assert_allclose(ds.X_val_raw, X[split_at:], rtol=1e-6)
        assert ds.y_val.tolist() == y[split_at:].tolist()


def test_iris_split_is_train_test_split_random_state_42():
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split

    iris = load_iris()
    X_tr, X_te, y_tr, y_te = train_test_split(iris.data, iris.target, test_size=0.25,
                                              random_state=42)
    for name in ("iris-keras", "iris-keras-decay"):
        ds = data.load(spec_mod.members(recipes.spec(name))[0].data)
        np.testing.assert_allclose(ds.X_train, X_tr, rtol=1e-6)
        np.testing.assert_allclose(ds.X_val, X_te, rtol=1e-6)
        assert ds.y_val.tolist() == y_te.tolist() and len(ds.y_train) == 112


def test_keras_time_decay_lrs_recorded_per_iteration(tmp_path):
    s = recipes.spec("iris-keras-decay", epochs=3, seeds=1,
                     extra={"run": {"probes": False}, "sweep": {"lr": [0.2, 0.01]}})
    res = runner.sweep(s, tmp_path / "d", report=False)
    store = Store.open(res.directory)
    try:
        for m in store.members():
            lrs = store.series(m["id"])["lr"]
            lr0 = m["swept"]["lr"]
            # 112 samples, batch 32: 4 iterations per epoch; Keras: lr0 / (1 + decay * it)
            want = [lr0 * (1.0 / (1.0 + 0.01 * it)) for it in range(12)]
            assert lrs == pytest.approx(want, rel=1e-6)
    finally:
        store.close()


def test_keras_default_init_is_glorot_uniform_with_zero_bias():
    m = spec_mod.members(recipes.spec("iris-keras"))[0]
    arch = nets.arch_for(m.model, 4, 3)
    assert arch.sizes == (4, 50, 12, 3)
    for seed in range(3):
        ps = nets.init_member(arch, m.model, seed)
        for (fi, fo), w, b in zip(zip(arch.sizes[:-1], arch.sizes[1:]), ps[0::2], ps[1::2]):
            limit = math.sqrt(6.0 / (fi + fo))
            assert float(w.abs().max()) <= limit
            assert float(w.abs().max()) > 0.8 * limit
            assert float(b.abs().max()) == 0.0
        w1 = ps[2]  # 50 x 12: 600 draws, var of U(-a, a) is a^2 / 3
        assert float(w1.var()) == pytest.approx(6.0 / 62 / 3, rel=0.2)


def test_seed_000_and_001_initialisers():
    m = spec_mod.members(recipes.spec("blobs-deep-relu"))[0]
    ps = nets.init_member(nets.arch_for(m.model, 2, 4), m.model, 0)
    ws = np.concatenate([p.numpy().ravel() for p in ps[0::2]])
    assert abs(ws.std() - 0.05) < 0.01 and all(float(b.abs().max()) == 0 for b in ps[1::2])
    m = next(m for m in spec_mod.members(recipes.spec("tanh-fullbatch"))
             if m.model.init_scale == 1.0)
    arch = nets.arch_for(m.model, 30, 2)
    assert arch.sizes == (30, 128, 64, 1) and m.train.batch_size == 0
    w1, b1, w2, b2, w3, b3 = nets.init_member(arch, m.model, 0)
    assert 0 <= float(w1.min()) and float(w1.max()) < 1 and abs(float(w1.mean()) - 0.5) < 0.05
    assert abs(float(w2.std()) - 1) < 0.05 and all(float(b.abs().max()) == 0 for b in (b1, b2, b3))


def _row(pre, lr, order, learned, dead_layer=False, died_at=None):
    """A synthetic seed-000 answer row (what answers._blobs_rows measures per member)."""
    loss = 0.3 if learned else 1.386
    return {"member": {"preprocess": pre, "lr": lr, "shuffle": order}, "shuffle": order,
            "layers": 4, "learned": learned, "stuck": not learned, "dead_layer": dead_layer,
            "died_at": died_at, "dead": 0.4 if learned else 0.3, "share": 1.0,
            "bias_last": 0.2 if learned else -0.002, "last_in0": 3e-4,
            "signal0": [0.5, 0.05, 0.005, 0.0005], "input_std": 3.0 if pre == "none" else 1.0,
            "rec": {"status": "ok", "final": {"train_loss": loss, "val_acc": 0.9 if learned
                                              else 0.25},
                    "history": {"epoch": list(range(201))}}}


def test_seed_000_direct_answer_is_short_and_carries_the_counts():
    from lrlab.recipes import answers

    rows = ([_row("none", 0.5, "epoch", i < 1, dead_layer=i >= 1, died_at=1) for i in range(8)]
            + [_row("none", 0.001, "epoch", False) for _ in range(8)]
            + [_row("standardize", 0.5, "epoch", i < 2, dead_layer=i >= 2) for i in range(8)]
            + [_row("none", 0.4, "epoch", i < 3, died_at=None if i < 3 else 40)
               for i in range(8)]
            + [_row("none", 0.4, "once", i < 6, died_at=None if i < 6 else 1)
               for i in range(8)])
    lines = answers._blobs_direct(rows, 1.386)
    words = [w for w in " ".join(lines[1:]).split() if w != "-"]
    assert len(words) <= 130, len(words)
    assert lines[1] == ("- lr 0.5: 1/8 raw seeds learn; 7/7 others lose a whole hidden layer "
                        "(biases -0.002 vs inputs ~0.0003), stalling at the class-frequency "
                        "loss 1.39: stuck, not overshooting.")
    assert lines[2].startswith("- lr 0.001: loss still 1.39 after 200 epochs: the signal "
                               "shrinks ~10x per layer")
    assert lines[2].endswith("one class (share 1).")
    assert "~3x" in lines[3] and "at lr 0.5 2/8 learn (raw 1/8)." in lines[3]
    assert lines[4] == ("- Dead ReLUs: single ones are harmless (learners keep 40.0% dead); "
                        "a dead layer is fatal (13/13 runs failed).")
    assert "raw lr 0.4 learns in 3/8 seeds reshuffled every epoch" in lines[5]
    assert "vs 6/8 with one order reused" in lines[5]
    assert lines[5].endswith("kills the last hidden layer later in 5 vs 0 runs.")
    order = answers._order_lines(rows)
    assert any("none        lr 0.4    epoch: learned   3/8; layer dead at epoch 1: 0, later: 5 "
               "(median epoch 40)" in x for x in order)
    assert any("once : learned   6/8; layer dead at epoch 1: 2, later: 0" in x for x in order)
