"""The report: sections in order, self-contained, escaped, figures as PNG + CSV, numbers checked
against independent computations, rebuilt from the store alone, and the compare page."""

from __future__ import annotations

import base64
import csv
import json
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import lrlab
from lrlab import report
from lrlab.cli import app
from lrlab.export import records

XSS_NAME = "<script>alert(1)</script>"
XSS_FILE = "<img src=x onerror=alert(2)>.csv"
SECTION_IDS = [sid for sid, _ in report.SECTIONS]

BLOBS = {
    "name": "tiny-blobs",
    "data": {"source": "blobs", "n": 200, "classes": 3, "validation_split": 0.2},
    "model": {"hidden": [8, 8], "init": "normal:0.3"},
    "train": {"batch_size": 32, "epochs": 6},
    "sweep": {"lr": [0.03, 0.3, 300.0], "preprocess": ["none", "standardize"], "seeds": 2},
    "run": {"probes": False},
}


def tiny_csv(path: Path, n: int = 90, seed: int = 0) -> Path:
    """Three 2-D clusters as a CSV file (x1, x2, label)."""
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0, 0.0], [4.0, 0.5], [1.5, 4.0]])
    y = np.arange(n) % 3
    X = centers[y] + rng.normal(0, 0.6, (n, 2))
    lines = ["x1,x2,label"] + [f"{a:.5f},{b:.5f},{c}" for (a, b), c in zip(X, y)]
    path.write_text("\n".join(lines) + "\n")
    return path


def xss_experiment(root: Path) -> Path:
    """An experiment whose name and data file name are HTML/script injections."""
    data = tiny_csv(root / XSS_FILE)
    out = root / "xss"
    lrlab.sweep({"name": XSS_NAME, "data": {"source": f"csv:{data}"},
                 "model": {"hidden": [6]}, "train": {"batch_size": 16, "epochs": 3},
                 "sweep": {"lr": [0.05, 0.5]}, "run": {"probes": False}}, out)
    return out


@pytest.fixture(scope="module")
def blobs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "blobs"
    lrlab.sweep(BLOBS, out)
    return out


@pytest.fixture(scope="module")
def iris(tmp_path_factory) -> Path:
    """No lr axis (optimizer swept), 4-D data, no probes: sections degrade, never vanish."""
    out = tmp_path_factory.mktemp("report") / "iris"
    lrlab.sweep({"name": "iris-opt", "data": {"source": "iris", "split": "stratified"},
                 "model": {"hidden": [8]}, "train": {"epochs": 3, "lr": 0.05},
                 "sweep": {"optimizer": ["sgd", "adam"]}, "run": {"probes": False}}, out)
    return out


def tables(html: str) -> list[str]:
    return re.findall(r"<table.*?</table>", html, flags=re.S)


def strip_data_uris(html: str) -> str:
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:", html)


# ----------------------------------------------------------------------------- structure


def test_sections_in_order_and_self_contained(blobs):
    html = (blobs / "report.html").read_text()
    pos = [html.find(f"<section id='{sid}'>") for sid in SECTION_IDS]
    assert all(p >= 0 for p in pos), dict(zip(SECTION_IDS, pos))
    assert pos == sorted(pos)
    body = strip_data_uris(html)
    # every reference stays on the page or in the folder: no scheme, no protocol-relative URL
    refs = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]*)['"]""", body)
    assert refs
    for ref in refs:
        assert ref in ("data:", "data:,") or ref.startswith("#") or \
            re.fullmatch(r"[\w.-]+\.(png|csv)", ref), ref
    for needle in ("http:", "https:", "url(", "@import", "<iframe", "<link rel='stylesheet'"):
        assert needle not in body.lower(), needle
    assert "default-src 'none'" in html  # the CSP: nothing may be fetched


def test_every_figure_is_png_and_csv_next_to_the_report(blobs):
    html = (blobs / "report.html").read_text()
    embedded = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    stems = re.findall(r"<a href='([\w-]+)\.png'>", html)
    assert len(embedded) == len(stems) >= 3
    assert {"lr_outcome", "curves", "decision_regions"} <= set(stems)
    for b64, stem in zip(embedded, stems):
        assert (blobs / f"{stem}.png").read_bytes() == base64.b64decode(b64)
        rows = list(csv.reader((blobs / f"{stem}.csv").open()))
        assert len(rows) > 1 and all(rows[0])


def test_user_strings_are_escaped(tmp_path):
    out = xss_experiment(tmp_path)
    html = (out / "report.html").read_text()
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(2)&gt;" in html
    assert html.count("<script") == 1  # the page's own sorting script
    assert "onerror=" not in html.replace("onerror=alert(2)&gt;", "")
    # the CSV data was read and drawn: decision regions for its 2-D input
    assert "decision_regions.png" in html


# ----------------------------------------------------------------------------- numbers


def test_verdict_table_aggregates_seeds(blobs):
    recs = records(blobs)
    rows = report.verdict_rows(recs)
    assert len(rows) == 6
    for row in rows:
        mine = [r for r in recs if {k: v for k, v in r["member"].items() if k != "seed"}
                == {k: v for k, v in row["member"].items() if k != "seed"}]
        labels = [r["verdict"]["label"] for r in mine]
        assert row["seeds"] == len(mine) == 2
        for lab in set(labels):
            assert f"{labels.count(lab)}/2 {lab}" in row["summary"]
        finals = [r["final"]["val_acc"] for r in mine if r["status"] == "ok"]
        assert row["median_val_acc"] == (pytest.approx(np.median(finals)) if finals else None)
    # lines in sweep order, learning rates ascending within a line
    order = [(r["member"]["preprocess"], r["member"]["lr"]) for r in rows]
    assert order == [(p, lr) for p in ("none", "standardize") for lr in (0.03, 0.3, 300.0)]
    # lr 300 blows up: drawn as diverged and counted in the accuracy table
    assert any(r["status"] == "diverged" for r in recs if r["member"]["lr"] == 300.0)
    html = (blobs / "report.html").read_text()
    assert "diverged" in html


def test_measurements_match_independent_arithmetic(blobs):
    exp = report.load_experiment(blobs)
    m = report.measurements(exp)
    recs = records(blobs)
    n_train = 160  # 200 samples, validation_split 0.2
    steps_per_epoch = 5  # ceil(160 / 32)
    # accuracy cell: median final val acc of the finished seeds
    col = m.accuracy.columns.index("preprocess=none")
    row = next(r for r in m.accuracy.rows if r[0].text == "0.03")
    accs = [r["final"]["val_acc"] for r in recs
            if r["member"]["lr"] == 0.03 and r["member"]["preprocess"] == "none"]
    assert row[col].sort == pytest.approx(np.median(accs))
    # throughput: training samples per second of each run's share of the cohort's time
    r0 = next(r for r in recs if r["status"] == "ok")
    f0 = report.run_facts(exp, r0)
    assert f0.samples == n_train * 6
    assert f0.steps_at_epoch == [steps_per_epoch * e for e in range(7)]
    # steps to target: the first epoch whose training loss reaches the target, in steps
    target, where = report.loss_target(recs)
    best = min(np.median([r["final"]["train_loss"] for r in recs if r["status"] == "ok"
                           and report.config_label(r["member"]) == lab])
                for lab in {report.config_label(r["member"]) for r in recs
                            if r["status"] == "ok"})
    assert target == pytest.approx(report.TARGET_FACTOR * best)
    for r in recs:
        tl = r["history"]["train_loss"]
        first = next((e for e, v in enumerate(tl) if v is not None and v <= target), None)
        got = report.steps_to(r, report.run_facts(exp, r), target)
        assert got == (None if first is None else first * steps_per_epoch)
    csv_rows = list(csv.DictReader((blobs / "measurements.csv").open()))
    assert len(csv_rows) == 6 and float(csv_rows[0]["target_loss"]) == pytest.approx(target)


def test_overfit_flag_reads_the_verdict():
    """The overfitting table has no rule of its own: it counts the verdicts' label."""
    hist = {"train_loss": [1.0, 0.9, 0.8, 0.7, 0.6], "val_loss": [1.0, 0.9, 1.0, 1.1, 1.2]}
    over = {"history": hist, "verdict": {"label": "overfitting", "labels": ["overfitting"]}}
    assert report.overfit_flag(over) is True
    flat = {"history": hist, "verdict": {"label": "collapsed", "labels": ["collapsed"]}}
    assert report.overfit_flag(flat) is False  # a run that did not learn never overfits
    assert report.overfit_flag({"history": {"train_loss": [1.0, 0.5],
                                            "val_loss": [None, None]}, "verdict": None}) is None


def test_decision_regions_match_an_independent_forward_pass(blobs):
    """The CSV's predicted classes equal a plain torch.nn forward of the stored weights."""
    exp = report.load_experiment(blobs)
    rows = list(csv.reader((blobs / "decision_regions.csv").open()))[1:]
    panel = "lr=0.03, preprocess=standardize"
    x1 = np.array([float(v) for v in next(r for r in rows if r[0] == panel and r[2] == "x1")[3:]])
    grid = [r for r in rows if r[0] == panel and r[2] != "x1"]
    assert len(grid) == report.REGION_GRID and len(x1) == report.REGION_GRID
    rec = next(r for r in records(blobs) if report.config_label(r["member"]) == panel)
    assert int(grid[0][1]) == rec["member"]["seed"] == 0
    ds = exp.dataset(rec["id"])
    w = exp.weights(rec["id"])
    layers: list[torch.nn.Module] = []
    for i in range(0, len(w), 2):
        lin = torch.nn.Linear(*w[i].shape).double()
        lin.weight.data = torch.tensor(w[i].T, dtype=torch.float64)
        lin.bias.data = torch.tensor(w[i + 1].reshape(-1), dtype=torch.float64)
        layers += [lin, torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers[:-1])
    for row in grid[::17]:
        x2 = float(row[2])
        raw = np.column_stack([x1, np.full_like(x1, x2)])
        z = (raw - ds.shift) / ds.scale  # standardize, fitted on the training part
        with torch.no_grad():
            pred = net(torch.tensor(z, dtype=torch.float64)).argmax(1).numpy()
        assert (pred == np.array([int(v) for v in row[3:]])).mean() > 0.99


def test_probe_and_sharpness_panels_from_stored_metrics(tmp_path):
    """Probe metrics written under the agreed names are drawn, tabled and put in CSV."""
    out = tmp_path / "probed"
    spec = dict(BLOBS, sweep={"lr": [0.03, 0.3], "seeds": 1}, name="probed")
    lrlab.sweep(spec, out, report=False)
    con = sqlite3.connect(out / "lrlab.sqlite")
    ids = [i for (i,) in con.execute("SELECT id FROM members")]
    rows = []
    for i in ids:
        for e in range(7):
            rows += [(i, e, "dead_frac", 0.1 * i + 0.01 * e), (i, e, "dead_frac_l1", 0.2),
                     (i, e, "grad_norm", 1.0 + e), (i, e, "update_ratio_l1", 0.01),
                     (i, e, "update_ratio_l2", 0.03), (i, e, "top_class_share", 0.5),
                     (i, e, "majority_share", 0.34),
                     (i, e, "sharpness", 10.0 * (i + 1) + e if e in (0, 3, 6) else None)]
    con.executemany("INSERT OR REPLACE INTO metrics VALUES (?, ?, ?, ?)", rows)
    con.commit()
    con.close()
    html = report.build(out).read_text()
    assert "probes.png" in html and "No probe measurements" not in html
    probes = list(csv.DictReader((out / "probes.csv").open()))
    dead = [r for r in probes if r["probe"] == "dead_frac" and r["config"] == "lr=0.3"]
    assert [float(r["median"]) for r in dead] == pytest.approx([0.1 + 0.01 * e
                                                               for e in range(7)])
    upd = [float(r["median"]) for r in probes if r["probe"] == "update_ratio"]
    assert upd and upd == pytest.approx([0.02] * len(upd))  # mean over the layers
    # sharpness: max during training (epochs >= 1) per lr, and 2/λ next to it
    lr_rows = list(csv.DictReader((out / "lr_outcome.csv").open()))
    for r in lr_rows:
        i = 0 if float(r["lr"]) == 0.03 else 1
        assert float(r["max_sharpness_at_lr"]) == pytest.approx(10.0 * (i + 1) + 6)
        assert float(r["stability_lr"]) == pytest.approx(
            2 / (10.0 * (i + 1) + 6))
    assert "2/λ (stability lr)" in html and "Per layer at the end of training" in html


def test_sections_degrade_without_lr_axis_2d_data_or_probes(iris):
    html = (iris / "report.html").read_text()
    for sid in SECTION_IDS:
        assert f"<section id='{sid}'>" in html
    assert "The learning rate was not swept" in html
    assert "decision regions are drawn for 2-D inputs, and this data has 4" in html
    assert "No probe measurements were recorded" in html
    assert "optimizer=adam" in html


def test_peak_memory_per_cohort_or_not_recorded(iris, tmp_path):
    exp = report.load_experiment(iris)
    exp.peak_rss_mb = {}
    assert "Not recorded" in report.sec_measurements(exp, tmp_path)
    ids = [r["id"] for r in exp.recs]
    exp.peak_rss_mb = {i: 100.0 + i for i in ids}  # what the runner stores per member
    mem = report.peak_memory(exp)
    by_cohort: dict[int, float] = {}
    for i in ids:
        c = exp.cohort_of[i]
        by_cohort[c] = max(by_cohort.get(c, 0.0), 100.0 + i)
    assert [v / 2**20 for _, v in mem] == pytest.approx([by_cohort[c] for c in sorted(by_cohort)])
    html = report.sec_measurements(exp, tmp_path)
    assert "Not recorded" not in html and "peak memory (MiB)" in html


# ----------------------------------------------------------------------------- CLI


def test_lrlab_report_rebuilds_the_same_tables_from_the_store(blobs, tmp_path, monkeypatch):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(blobs, copy)
    before_html = (copy / "report.html").read_text()
    before_csv = {p.name: p.read_text() for p in copy.glob("*.csv")}
    for p in [*copy.glob("*.csv"), *copy.glob("*.png"), copy / "report.html"]:
        p.unlink()

    def no_training(*a, **k):
        raise AssertionError("lrlab report must not train")

    monkeypatch.setattr("lrlab.engine.run_cohort", no_training)
    res = CliRunner().invoke(app, ["report", str(copy)])
    assert res.exit_code == 0, res.output
    after_html = (copy / "report.html").read_text()
    assert tables(after_html) == tables(before_html) and len(tables(before_html)) >= 7
    assert {p.name: p.read_text() for p in copy.glob("*.csv")} == before_csv
    # the whole page too, figures included, up to the folder's path in the Reproduce section
    assert after_html.replace(str(copy), str(blobs)) == before_html


def test_lrlab_compare_two_experiments(blobs, iris, tmp_path):
    out = tmp_path / "cmp"
    res = CliRunner().invoke(app, ["compare", str(blobs), str(iris), "--out", str(out)])
    assert res.exit_code == 0, res.output
    html = (out / "report.html").read_text()
    for sid, _ in report.COMPARE_SECTIONS:
        assert f"<section id='{sid}'>" in html
    assert "tiny-blobs" in html and "iris-opt" in html
    lines = {r["line"] for r in csv.DictReader((out / "lr_outcome.csv").open())}
    assert lines == {"tiny-blobs: preprocess=none", "tiny-blobs: preprocess=standardize"}
    verdicts = list(csv.DictReader((out / "verdicts.csv").open()))
    assert {r["experiment"] for r in verdicts} == {"tiny-blobs", "iris-opt"}
    assert len(verdicts) == 6 + 2
    assert json.loads(json.dumps(report.COMPARE_SECTIONS))  # ids are plain strings
    bad = CliRunner().invoke(app, ["compare", str(blobs)])
    assert bad.exit_code == 2 and "at least 2" in bad.output
    bad = CliRunner().invoke(app, ["compare", str(blobs), str(iris), "--out", str(blobs)])
    assert bad.exit_code == 2 and "experiment folder" in bad.output


def test_many_lines_stay_readable(tmp_path):
    """12 lines x 3 lrs (like the schedules tour): a ranked answer table, lr-vs-outcome split
    into panels by optimizer, curves one panel per line, measurements one row per line."""
    out = tmp_path / "many"
    lrlab.sweep({"name": "many", "data": {"source": "iris", "split": "stratified"},
                 "train": {"batch_size": 30, "epochs": 2},
                 "sweep": {"optimizer": ["sgd", "rmsprop", "adam"],
                           "schedule": ["constant", "cosine"], "hidden": [[4], [6]],
                           "lr": [0.003, 0.03, 0.3]}, "run": {"probes": False}}, out)
    html = (out / "report.html").read_text()
    assert "best of 12 groups" in html
    recs = records(out)
    exp = report.load_experiment(out)
    # rank 1 = the group whose recommended lr has the lowest median final val loss
    scores = []
    for rec, g in report._recommended_groups(exp):
        assert (g is None) == (rec["best_lr"] is None)  # no lr beat the baseline in 2 epochs
        if g is None:
            continue
        assert report.lr_of(g[0]["member"]) == rec["best_lr"]
        scores.append((np.median([r["final"]["val_loss"] for r in g if r["status"] == "ok"]),
                       rec["group"]))
    winner = min(scores)[1]
    assert f"Use <b>{winner}</b>" in html
    panels = {r["line"].split(":")[0] for r in csv.DictReader((out / "lr_outcome.csv").open())}
    assert panels == {"optimizer=sgd", "optimizer=rmsprop", "optimizer=adam"}
    m = report.measurements(exp)
    assert m.accuracy.columns == ["optimizer", "schedule", "hidden", "lr=0.003", "lr=0.03",
                                  "lr=0.3"]
    assert len(m.accuracy.rows) == 12
    row = next(r for r in m.accuracy.rows if [c.text for c in r[:3]] == ["adam", "cosine", "6"])
    want = [r["final"]["val_acc"] for r in recs if r["member"]["optimizer"] == "adam"
            and r["member"]["schedule"] == "cosine" and r["member"]["hidden"] == [6]
            and r["member"]["lr"] == 0.03 and r["status"] == "ok"]
    assert row[4].sort == (pytest.approx(np.median(want)) if want else None)
    assert "one panel per combination of the other swept values" in html


def test_csv_text_never_starts_a_spreadsheet_formula(tmp_path):
    path = tmp_path / "t.csv"
    report._csv([["name", "x"], ["=HYPERLINK(1)", -0.5], ["-cmd", 2.0], ["lr=0.1", None]], path)
    rows = list(csv.reader(path.open()))
    assert rows[1:] == [["'=HYPERLINK(1)", "-0.5"], ["'-cmd", "2"], ["lr=0.1", ""]]
