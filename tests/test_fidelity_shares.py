"""lrlab against real Keras: the share of seeds that learn, per cell, against the committed
numbers of `make fidelity` (bench/fidelity/keras_shares.json, Keras 3 on TensorFlow).

Keras under keras.utils.set_random_seed repeats one sample order every epoch (lrlab's
shuffle = "once"); without a global seed it draws a new one every epoch (shuffle = "epoch").
Each lrlab share is compared with the Keras share of its mapped setting by a pooled
two-proportion z test at the two-sided 1% level (|z| < 2.576): with about 24-40 Keras seeds and
SEEDS lrlab seeds, the standard error of the difference at a share of 0.5 is about 0.12, so
the test accepts differences up to about 0.3. Where Keras' own two settings differ at that
level (seed 000, standardized, lr 0.5: about 0.5 against 0.05), lrlab with the orders swapped
must be rejected, so the test has the power to see the difference it exists for.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from lrlab import data, engine, recipes, spec

SHARES = Path(__file__).resolve().parents[1] / "bench" / "fidelity" / "keras_shares.json"
SEEDS = 48
Z_CRIT = 2.576  # two-sided 1%
OTHER = {"once": "epoch", "epoch": "once"}


def z_two_proportions(k1: int, n1: int, k2: int, n2: int) -> float:
    """Pooled two-proportion z statistic (0 when both shares are 0 or both 1)."""
    p = (k1 + k2) / (n1 + n2)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    return 0.0 if se == 0 else (k1 / n1 - k2 / n2) / se


def test_z_statistic_against_a_hand_computed_case():
    # 30/48 vs 10/40: p = 40/88, se = sqrt(p(1-p)(1/48 + 1/40)) = 0.106600, diff = 0.375
    assert z_two_proportions(30, 48, 10, 40) == pytest.approx(0.375 / 0.106600, rel=1e-5)
    assert z_two_proportions(0, 10, 0, 24) == 0.0


@pytest.fixture(scope="module")
def committed() -> dict:
    return json.loads(SHARES.read_text())


@pytest.fixture(scope="module")
def lrlab_counts(committed) -> dict[str, dict[str, tuple[int, int]]]:
    """Per cell and order: (seeds above the cell's threshold, seeds), seeds 0..SEEDS-1."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # the compiled kernel splits the members over two threads
    try:
        out = {}
        for cell in committed["cells"]:
            doc = recipes.merge(cell["lrlab_spec"],
                                {"sweep": {"shuffle": ["epoch", "once"], "seeds": SEEDS}})
            s = spec.resolve(doc)
            accs: dict[str, list[float]] = {"epoch": [], "once": []}
            for c in spec.cohorts(s):
                for r in engine.run_cohort(c, data.load(c.first.data), s.run):
                    accs[r.member.train.shuffle].append(r.history["val_acc"][-1])
            out[cell["name"]] = {m: (sum(a > cell["above"] for a in v), len(v))
                                 for m, v in accs.items()}
        return out
    finally:
        torch.set_num_threads(before)


def test_committed_numbers_are_complete(committed):
    assert committed["keras"].startswith("3.")
    assert committed["trace"]["seeded_orders_repeat_every_epoch"] is True
    assert committed["trace"]["unseeded_orders_repeat_every_epoch"] is False
    assert committed["mapping"] == {"global_seed": "once", "no_global_seed": "epoch"}
    names = [c["name"] for c in committed["cells"]]
    assert any(n.startswith("blobs-deep-relu") for n in names)
    assert any(n.startswith("iris-keras") for n in names)
    for c in committed["cells"]:
        for setting in ("global_seed", "no_global_seed"):
            assert c["keras"][setting]["seeds"] >= 24, (c["name"], setting)


def test_lrlab_shares_match_keras(committed, lrlab_counts):
    bad = []
    for cell in committed["cells"]:
        for setting, order in committed["mapping"].items():
            kk, kn = cell["keras"][setting]["above"], cell["keras"][setting]["seeds"]
            lk, ln = lrlab_counts[cell["name"]][order]
            z = z_two_proportions(lk, ln, kk, kn)
            if abs(z) >= Z_CRIT:
                bad.append(f"{cell['name']}: lrlab shuffle={order} {lk}/{ln} vs Keras "
                           f"{setting} {kk}/{kn} (z = {z:.2f})")
    assert not bad, "; ".join(bad)


def test_the_wrong_order_is_rejected_where_keras_orders_differ(committed, lrlab_counts):
    """Where Keras' two settings differ at the test's level, lrlab with the other setting's
    order differs from Keras too: the test can tell the orders apart, so it would fail if
    `shuffle` did nothing (or mapped the wrong way)."""
    checked = 0
    for cell in committed["cells"]:
        ks, ku = cell["keras"]["global_seed"], cell["keras"]["no_global_seed"]
        if abs(z_two_proportions(ks["above"], ks["seeds"], ku["above"], ku["seeds"])) < Z_CRIT:
            continue
        for setting, order in committed["mapping"].items():
            k = cell["keras"][setting]
            lk, ln = lrlab_counts[cell["name"]][OTHER[order]]
            z = z_two_proportions(lk, ln, k["above"], k["seeds"])
            assert abs(z) >= Z_CRIT, (cell["name"], setting, lk, ln, k["above"], k["seeds"], z)
        checked += 1
    assert checked >= 1  # the seed-000 standardized cell: 0.5 seeded vs about 0.05 unseeded
