"""Real Keras 3 (TensorFlow backend) on the seed-000 and seed-004 recipes: sample-order traces
and per-seed final validation accuracies, one JSON line per run.

Runs in the side virtualenv made by `make fidelity` (keras, tensorflow-cpu, scikit-learn); it
never imports lrlab. Usage:

    python bench/fidelity/keras_runs.py trace OUT.json
    python bench/fidelity/keras_runs.py replay OUT.npz
    python bench/fidelity/keras_runs.py blobs OUT.jsonl --seeds 24 --global-seed yes
    python bench/fidelity/keras_runs.py iris OUT.jsonl --seeds 24 --global-seed no

`blobs` and `iris` append to OUT.jsonl and skip the (cell, seed) pairs already there, so an
interrupted run resumes. Seeds go outermost, so a run stopped early leaves every cell with
about the same number of seeds.

Seeding: `global_seed` true calls keras.utils.set_random_seed(s) (Python, numpy, TensorFlow and
Keras' own generator); false seeds only Python's and numpy's generators (which fixes Keras'
unseeded initializers, drawn from its Python-seeded global generator) and leaves TensorFlow's
shuffle unseeded, as the seed-000 question's code does. TensorFlow's global seed outlives
keras.backend.clear_session(), so one process runs one seeding mode only (`--global-seed`), and
the trace runs the unseeded fits before the seeded ones.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

BLOBS_CELLS = [  # (preprocess, lr): the raw lr that "works" and the standardized one that fails
    ("none", 0.4),
    ("standardize", 0.5),
]
IRIS_LRS = [0.2, 0.1, 0.03, 0.01]
BLOBS_STEPS = 13  # ceil(800 / 64): one epoch per tf.function call
IRIS_STEPS = 4  # ceil(112 / 32)
"""The runs fit on the training rows and evaluate the held-out rows once at the end, with one
epoch of steps per compiled call (steps_per_execution), instead of fit(validation_split=0.2)
evaluating every epoch: 2-3x less CPU, and the same training (`equivalence` in the trace
checks that both give bit-identical weights)."""


def _threads(n: int) -> None:
    tf.config.threading.set_intra_op_parallelism_threads(n)
    tf.config.threading.set_inter_op_parallelism_threads(n)


def _seed(s: int, global_seed: bool) -> None:
    keras.backend.clear_session()  # also drops Keras' global seed generator
    if global_seed:
        keras.utils.set_random_seed(s)
    else:
        random.seed(s)
        np.random.seed(s)


def blobs_data(preprocess: str) -> tuple[np.ndarray, np.ndarray]:
    """make_blobs as the recipe (random_state=0); standardized with the first 80% (the part
    validation_split=0.2 trains on)."""
    from sklearn.datasets import make_blobs

    X, y = make_blobs(n_samples=1000, centers=4, n_features=2, random_state=0)
    if preprocess == "standardize":
        mu, sd = X[:800].mean(0), X[:800].std(0)
        X = (X - mu) / sd
    return X.astype("float32"), keras.utils.to_categorical(y, 4)


def blobs_layers() -> list[Any]:
    """The question's network; a fresh RandomNormal(0, 0.05) per layer (as lrlab's init)."""
    def init() -> Any:
        return keras.initializers.RandomNormal(mean=0.0, stddev=0.05)

    return [keras.Input(shape=(2,))] + [
        keras.layers.Dense(10, activation="relu", kernel_initializer=init()) for _ in range(4)
    ] + [keras.layers.Dense(4, activation="softmax", kernel_initializer=init())]


def blobs_model(lr: float, steps_per_execution: int = 1) -> keras.Model:
    model = keras.Sequential(blobs_layers())
    model.compile(loss="categorical_crossentropy", optimizer=keras.optimizers.SGD(learning_rate=lr),
                  metrics=["accuracy"], steps_per_execution=steps_per_execution)
    return model


def iris_data() -> tuple[np.ndarray, ...]:
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    iris = datasets.load_iris()
    Y = keras.utils.to_categorical(iris.target, 3)
    X_tr, X_te, y_tr, y_te = train_test_split(iris.data.astype("float32"), Y, test_size=0.25,
                                              random_state=42)
    return X_tr, X_te, y_tr, y_te


def iris_model(lr: float, steps_per_execution: int = 1) -> keras.Model:
    """The article's model: Keras' default glorot_uniform kernels and zero biases."""
    model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(50, activation="relu"),
                              keras.layers.Dense(12, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile(loss="categorical_crossentropy", optimizer=keras.optimizers.SGD(learning_rate=lr),
                  metrics=["accuracy"], steps_per_execution=steps_per_execution)
    return model


class _Tracer(keras.Sequential):
    """Records the inputs of every training batch (needs run_eagerly=True)."""

    batches: list[np.ndarray]

    def train_step(self, data: Any) -> Any:
        self.batches.append(np.array(data[0]))
        return super().train_step(data)


def trace(out: Path, epochs: int = 3) -> dict[str, Any]:
    """Which training rows each batch of each epoch holds, for the blobs fit call (1000 rows,
    validation_split=0.2, batch 64), seeded both ways, two seeds each."""
    n = 1000
    X = np.stack([np.arange(n), np.zeros(n)], 1).astype("float32")
    _, Y = blobs_data("none")
    result: dict[str, Any] = {"keras": keras.__version__, "tensorflow": tf.__version__,
                              "epochs": epochs, "runs": []}
    for global_seed in (False, True):  # unseeded first: a global seed would outlive its fit
        for s in (0, 1):
            _seed(s, global_seed)
            model = _Tracer([keras.Input(shape=(2,)), keras.layers.Dense(4, activation="softmax")])
            model.batches = []
            model.compile(loss="categorical_crossentropy", optimizer="sgd", run_eagerly=True)
            model.fit(X, Y, epochs=epochs, batch_size=64, validation_split=0.2, verbose=0)
            steps = len(model.batches) // epochs
            rows = [[int(v) for v in b[:, 0]] for b in model.batches]  # column 0: row index
            orders = [sum(rows[e * steps:(e + 1) * steps], []) for e in range(epochs)]
            result["runs"].append({
                "global_seed": global_seed, "seed": s, "orders": orders,
                "rows_trained": sorted(set(orders[0])) == list(range(800)),
                "epochs_identical": all(o == orders[0] for o in orders),
            })
    result["equivalence"] = _equivalence()
    print("fit(validation_split) == fit(first 80%, steps_per_execution): "
          f"{result['equivalence']}")
    # does the same global seed give the same order in a fresh fit (reproducible)?
    seeded = [r for r in result["runs"] if r["global_seed"]]
    result["seeded_orders_differ_between_seeds"] = seeded[0]["orders"][0] != seeded[1]["orders"][0]
    out.write_text(json.dumps(result) + "\n")
    for r in result["runs"]:
        print(f"global_seed={r['global_seed']} seed={r['seed']}: trains rows 0..799 only "
              f"{r['rows_trained']}; epochs 1..{epochs} identical {r['epochs_identical']}; "
              f"epoch 1 starts {r['orders'][0][:6]}, epoch 2 starts {r['orders'][1][:6]}")
    return result


def replay(out: Path, seed: int = 3, epochs: int = 12) -> None:
    """One seeded blobs run (raw input, lr 0.4) with everything a replay needs: the initial
    weights, the rows of every batch and the weights after every epoch (summarize.py feeds
    the same weights and order to a float32 torch loop and compares)."""
    X, Y = blobs_data("none")
    _seed(seed, True)
    tracer = _Tracer(blobs_layers())
    tracer.batches = []
    tracer.compile(loss="categorical_crossentropy", run_eagerly=True,
                   optimizer=keras.optimizers.SGD(learning_rate=0.4))
    w0 = [w.copy() for w in tracer.get_weights()]
    after: list[list[np.ndarray]] = []

    class Keep(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            after.append([w.copy() for w in self.model.get_weights()])

    tracer.fit(X[:800], Y[:800], epochs=epochs, batch_size=64, verbose=0, callbacks=[Keep()])
    where = {tuple(r): i for i, r in enumerate(X[:800].tolist())}  # the 800 points differ
    order = np.array([where[tuple(r)] for b in tracer.batches for r in b.tolist()])
    order = order.reshape(epochs, 800)
    np.savez(out, order=order, lr=0.4, X=X[:800], y=Y[:800].argmax(1),
             **{f"w0_{i}": w for i, w in enumerate(w0)},
             **{f"w{e + 1}_{i}": w for e, ws in enumerate(after) for i, w in enumerate(ws)})
    print(f"replay: seed {seed}, {epochs} epochs, orders repeat "
          f"{bool((order == order[0]).all())}")


def _equivalence(epochs: int = 5) -> bool:
    """fit(X, Y, validation_split=0.2) and fit(X[:800], Y[:800]) with one epoch per compiled
    call give bit-identical weights (same seed, same order, same steps)."""
    X, Y = blobs_data("none")
    weights = []
    for direct in (False, True):
        _seed(7, True)
        model = blobs_model(0.4, BLOBS_STEPS if direct else 1)
        if direct:
            model.fit(X[:800], Y[:800], epochs=epochs, batch_size=64, verbose=0)
        else:
            model.fit(X, Y, epochs=epochs, batch_size=64, validation_split=0.2, verbose=0)
        weights.append(model.get_weights())
    return all(np.array_equal(a, b) for a, b in zip(*weights))


def _done(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    return {json.loads(line)["key"] for line in path.read_text().splitlines() if line.strip()}


def _append(path: Path, rec: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(rec) + "\n")


def run_blobs(out: Path, seeds: int, first: int, global_seed: bool, only: str | None = None
              ) -> None:
    done = _done(out)
    for s in range(first, first + seeds):
        for preprocess, lr in BLOBS_CELLS:
            if only and preprocess != only:
                continue
            X, Y = blobs_data(preprocess)
            key = f"blobs/{preprocess}/{lr}/{global_seed}/{s}"
            if key in done:
                continue
            t0 = time.perf_counter()
            _seed(s, global_seed)
            model = blobs_model(lr, BLOBS_STEPS)
            h = model.fit(X[:800], Y[:800], epochs=200, batch_size=64, verbose=0)
            val_loss, val_acc = model.evaluate(X[800:], Y[800:], verbose=0)
            _append(out, {"key": key, "suite": "blobs", "preprocess": preprocess, "lr": lr,
                          "global_seed": global_seed, "seed": s, "val_acc": val_acc,
                          "train_acc": h.history["accuracy"][-1], "val_loss": val_loss,
                          "seconds": round(time.perf_counter() - t0, 2)})
            print(key, round(val_acc, 3), flush=True)


def run_iris(out: Path, seeds: int, first: int, global_seed: bool) -> None:
    done = _done(out)
    X_tr, X_te, y_tr, y_te = iris_data()
    for s in range(first, first + seeds):
        for lr in IRIS_LRS:
            key = f"iris/{lr}/{global_seed}/{s}"
            if key in done:
                continue
            t0 = time.perf_counter()
            _seed(s, global_seed)
            model = iris_model(lr, IRIS_STEPS)
            h = model.fit(X_tr, y_tr, epochs=20, batch_size=32, verbose=0)
            val_loss, val_acc = model.evaluate(X_te, y_te, verbose=0)
            _append(out, {"key": key, "suite": "iris", "lr": lr, "global_seed": global_seed,
                          "seed": s, "val_acc": val_acc, "train_acc": h.history["accuracy"][-1],
                          "val_loss": val_loss, "seconds": round(time.perf_counter() - t0, 2)})
            print(key, round(val_acc, 3), flush=True)


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["trace", "replay", "blobs", "iris"])
    ap.add_argument("out", type=Path)
    ap.add_argument("--seeds", type=int, default=24)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--global-seed", choices=["yes", "no"], default="yes")
    ap.add_argument("--preprocess", choices=["none", "standardize"], default=None,
                    help="blobs: only this cell")
    a = ap.parse_args(argv)
    _threads(a.threads)
    if a.what == "trace":
        trace(a.out)
    elif a.what == "replay":
        replay(a.out)
    elif a.what == "blobs":
        run_blobs(a.out, a.seeds, a.first_seed, a.global_seed == "yes", a.preprocess)
    else:
        run_iris(a.out, a.seeds, a.first_seed, a.global_seed == "yes")


if __name__ == "__main__":
    main(sys.argv[1:])
