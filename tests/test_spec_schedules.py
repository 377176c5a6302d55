"""Per-schedule `[train.schedule_args.NAME]` tables: a sweep over schedules where each member
gets exactly its own schedule's arguments, validated per schedule, round-tripped through TOML,
and reaching the engine (the recorded per-step lr equals each schedule's formula)."""

from __future__ import annotations

import math

import pytest
import tomllib

from lrlab import runner
from lrlab import spec as S
from lrlab.errors import LrlabError
from lrlab.store import Store

TOUR = """
[train]
epochs = 4
batch_size = 10
[train.schedule_args]
warmup = 0
[train.schedule_args.step]
step_size = 2
gamma = 0.5
[train.schedule_args.exponential]
gamma = 0.9
[train.schedule_args.time_decay]
decay = 0.25
[sweep]
schedule = ["constant", "step", "exponential", "cosine", "time_decay"]
lr = [0.1, 0.2]
"""


def test_each_member_gets_exactly_its_own_schedule_args():
    spec = S.resolve(tomllib.loads(TOUR))
    got = {(m.train.schedule, m.train.lr): dict(m.train.schedule_args) for m in S.members(spec)}
    for lr in (0.1, 0.2):
        assert got[("constant", lr)] == {"warmup": 0}
        assert got[("step", lr)] == {"warmup": 0, "step_size": 2, "gamma": 0.5}
        assert got[("exponential", lr)] == {"warmup": 0, "gamma": 0.9}
        assert got[("cosine", lr)] == {"warmup": 0}
        assert got[("time_decay", lr)] == {"warmup": 0, "decay": 0.25}
    # one cohort per schedule (the lr axis shares it)
    cohorts = S.cohorts(spec)
    assert sorted(c.first.train.schedule for c in cohorts) == sorted(
        ["constant", "step", "exponential", "cosine", "time_decay"])
    assert all(len(c.members) == 2 for c in cohorts)


def test_subtable_wins_over_flat_key_and_flat_keys_go_where_accepted():
    spec = S.resolve({"train": {"schedule_args": {"gamma": 0.3, "step_size": 3,
                                                  "step": {"gamma": 0.7}}},
                      "sweep": {"schedule": ["step", "exponential"]}})
    by = {m.train.schedule: dict(m.train.schedule_args) for m in S.members(spec)}
    assert by["step"] == {"gamma": 0.7, "step_size": 3}
    assert by["exponential"] == {"gamma": 0.3}


def test_flat_keys_alone_still_work_as_before():
    spec = S.resolve({"train": {"schedule": "time_decay", "schedule_args": {"decay": 0.01}}})
    assert spec.train.schedule_args == (("decay", 0.01),)
    assert S.members(spec)[0].train.schedule_args == (("decay", 0.01),)
    with pytest.raises(LrlabError, match=r"`\[train\]\.schedule_args\.gama` is not an argument "
                                         r"of schedule 'step'"):
        S.resolve({"train": {"schedule": "step", "schedule_args": {"step_size": 1, "gama": 1}}})


@pytest.mark.parametrize("doc, words", [
    ({"train": {"schedule_args": {"foo": 1}}, "sweep": {"schedule": ["step", "cosine"]}},
     ["`[train].schedule_args.foo` is not an argument of any schedule in use (step, cosine)"]),
    ({"train": {"schedule_args": {"stepp": {"step_size": 1}}}},
     ["`[train].schedule_args.stepp` is a table, so it must be named after a schedule",
      "cosine"]),
    ({"train": {"schedule_args": {"step": {"step_size": 0}}}, "sweep": {"schedule": ["step",
                                                                                    "cosine"]}},
     ["schedule 'step'", "step_size` must be an integer >= 1; got 0"]),
    ({"sweep": {"schedule": ["cosine", "exponential"]}},
     ["schedule 'exponential'", "schedule_args.gamma` is required"]),
    ({"train": {"schedule_args": {"step": {"gama": 2}}}, "sweep": {"schedule": ["step",
                                                                               "cosine"]}},
     ["schedule 'step'", "gama` is not an argument of schedule 'step'"]),
    ({"sweep": {"schedule": ["cosine", "nope"]}}, ["`[train].schedule` must be one of"]),
])
def test_each_swept_schedule_is_validated_against_its_own_args(doc, words):
    with pytest.raises(LrlabError) as info:
        S.resolve(doc)
    for w in words:
        assert w in str(info.value)


def test_phase_schedule_gets_its_own_args():
    spec = S.resolve({"train": {"schedule": "time_decay",
                                "schedule_args": {"time_decay": {"decay": 0.1},
                                                  "step": {"step_size": 1}}},
                      "phases": [{"schedule": "step", "lr": 0.5}, {"schedule": "constant"}]})
    m = S.members(spec)[0]
    assert dict(m.train.schedule_args) == {"decay": 0.1}
    assert dict(m.phases[0].schedule_args) == {"step_size": 1}
    assert dict(m.phases[1].schedule_args) == {}
    with pytest.raises(LrlabError, match="schedule 'step'.*step_size` is required"):
        S.resolve({"train": {"schedule": "time_decay", "schedule_args": {"decay": 0.1}},
                   "phases": [{"schedule": "step"}]})


def test_toml_round_trip_keeps_subtables():
    spec = S.resolve(tomllib.loads(TOUR))
    text = S.to_toml(spec)
    again = S.resolve(tomllib.loads(text))
    assert again == spec
    assert S.members(again) == S.members(spec)


def test_swept_schedules_reach_the_engine(tmp_path):
    doc = tomllib.loads(TOUR)
    doc["data"] = {"source": "blobs", "n": 50, "validation_split": 0.2}
    doc["model"] = {"hidden": [4]}
    doc["run"] = {"probes": False}
    res = runner.sweep(doc, tmp_path / "x", report=False)
    store = Store.open(res.directory)
    try:
        lrs = {m["id"]: store.series(m["id"])["lr"] for m in store.members()}
        swept = {m["id"]: m["swept"] for m in store.members()}
    finally:
        store.close()
    spe = 4  # 40 training samples, batch 10
    for mid, seq in lrs.items():
        lr0, name = swept[mid]["lr"], swept[mid]["schedule"]
        want = []
        for k in range(len(seq)):
            e = k // spe
            want.append({
                "constant": lr0,
                "step": lr0 * 0.5 ** (e // 2),
                "exponential": lr0 * 0.9 ** e,
                "cosine": lr0 * (1 + math.cos(math.pi * e / 4)) / 2,
                "time_decay": lr0 / (1 + 0.25 * k),
            }[name])
        assert len(seq) == 4 * spe
        assert seq == pytest.approx(want, rel=1e-6), name
