"""A small version of bench/calibration.py: one case per known cause, two seeds each, run
through `runner.sweep` with probes, and every run must get the label its cause calls for."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from lrlab import verdicts

BENCH = Path(__file__).resolve().parents[1] / "bench" / "calibration.py"


def _calibration():
    spec = importlib.util.spec_from_file_location("lrlab_calibration", BENCH)
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


CAL = _calibration()
FIRST = {}
for _case in CAL.cases(0, 2):  # the first configuration of each cause, seeds 0 and 1
    FIRST.setdefault(_case.cause, _case)
    if len(FIRST) == len(CAL.EXPECTED):
        break


def test_every_label_has_a_known_cause():
    assert set(CAL.EXPECTED.values()) == set(verdicts.LABELS)


@pytest.mark.parametrize("cause", sorted(CAL.EXPECTED))
def test_a_run_with_a_known_cause_gets_its_label(cause, tmp_path):
    case = FIRST[cause]
    got = CAL.judge_case(case, tmp_path)
    assert len(got) == 2
    for expected, label, rec in got:
        assert label == expected, (cause, rec["member"], rec["verdict"]["explanation"])
        assert rec["verdict"]["evidence"]  # never a label without numbers


def test_the_table_counts_precision_and_recall():
    rows, worst = CAL.table([("slow", "slow"), ("slow", "collapsed"), ("collapsed", "collapsed"),
                             ("converged", "converged")])
    by = {r[0]: r for r in rows}
    assert by["slow"][1:4] == [2, 1, 1] and by["slow"][4] == 1.0 and by["slow"][5] == 0.5
    assert by["collapsed"][4] == 0.5 and by["collapsed"][5] == 1.0
    assert worst["recall"] == 0.0  # labels without any case count as 0
