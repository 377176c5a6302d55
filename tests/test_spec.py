"""Spec: every key has a constraint; bad values give one sentence naming key, value, allowed;
axes expand to members; members group into cohorts."""

from __future__ import annotations

import dataclasses

import pytest

from lrlab import spec
from lrlab.errors import LrlabError


def test_every_key_has_a_constraint():
    for section, (cls, rules) in spec.SECTIONS.items():
        names = {f.name for f in dataclasses.fields(cls)}
        assert names == set(rules), section


BAD = [
    ({"train": {"lr": -0.1}}, "[train].lr", "-0.1"),
    ({"train": {"lr": 0}}, "[train].lr", "0"),
    ({"train": {"epochs": 0}}, "[train].epochs", "0"),
    ({"train": {"batch_size": -3}}, "[train].batch_size", "-3"),
    ({"train": {"optimizer": "lion"}}, "[train].optimizer", "lion"),
    ({"train": {"momentum": 1.5}}, "[train].momentum", "1.5"),
    ({"train": {"beta1": 1.0}}, "[train].beta1", "1.0"),
    ({"train": {"bogus": 1}}, "[train].bogus", "not a known key"),
    ({"model": {"activation": "swish"}}, "[model].activation", "swish"),
    ({"model": {"hidden": [10, 0]}}, "[model].hidden", "0"),
    ({"model": {"init": "normal:-1"}}, "[model].init", "normal:-1"),
    ({"model": {"init": "uniform:1:0"}}, "[model].init", "uniform:1:0"),
    ({"data": {"source": "imagenet"}}, "[data].source", "imagenet"),
    ({"data": {"preprocess": "whiten"}}, "[data].preprocess", "whiten"),
    ({"data": {"validation_split": 1.0}}, "[data].validation_split", "1.0"),
    ({"run": {"device": "tpu"}}, "[run].device", "tpu"),
    ({"sweep": {"lr": []}}, "[sweep].lr", "[]"),
    ({"sweep": {"lr": [0.1, -1]}}, "[sweep].lr", "-1"),
    ({"sweep": {"lr": [0.1, 0.1]}}, "[sweep].lr", "distinct"),
    ({"sweep": {"output": ["softmax"]}}, "[sweep].output", "cannot be swept"),
    ({"sweep": {"seeds": 0}}, "seeds", "0"),
    ({"banana": 1}, "banana", "not a known top-level key"),
    ({"phases": [{"optimizer": "adam"}]}, "phases[0].optimizer", "not a phase key"),
    ({"train": {"lr": float("nan")}}, "[train].lr", "nan"),
]


@pytest.mark.parametrize("doc,key,value", BAD)
def test_bad_values_name_key_value_and_allowed(doc, key, value):
    with pytest.raises(LrlabError) as exc:
        spec.resolve(doc)
    msg = str(exc.value)
    assert key in msg and value in msg
    assert "\n" not in msg


def test_members_and_cohorts():
    s = spec.resolve({"sweep": {"lr": [0.1, 0.01], "preprocess": ["none", "standardize"],
                                "optimizer": ["sgd", "momentum", "adam"], "seeds": 3}})
    ms = spec.members(s)
    assert len(ms) == 2 * 2 * 3 * 3
    assert [m.seed for m in ms[:3]] == [0, 1, 2]
    cs = spec.cohorts(s)
    # sgd and momentum share a family; preprocess changes the data: 2 x 2 cohorts
    assert len(cs) == 4
    assert sum(len(c.members) for c in cs) == len(ms)
    mom = [m for m in ms if m.swept["optimizer"] == "momentum"][0]
    assert mom.train.momentum == 0.9
    assert len(spec.cohorts(s, max_members=5)) > 4
    assert spec.cohorts(s, 5) == spec.cohorts(s, 5)  # deterministic composition


def test_toml_round_trip(tmp_path):
    s = spec.resolve({"name": "x", "model": {"hidden": [4, 4], "init": "normal:0.05"},
                      "train": {"schedule": "time_decay", "schedule_args": {"decay": 0.01}},
                      "sweep": {"lr": [0.1, 0.2], "seeds": [3, 5]},
                      "phases": [{"lr": 3.0, "batch_size": 10, "epochs": 2}]})
    p = tmp_path / "s.toml"
    p.write_text(spec.to_toml(s))
    again = spec.resolve(spec.load_toml(p))
    assert again == s


def test_first_seed_picks_disjoint_seeds():
    s = spec.resolve({"sweep": {"seeds": 5, "first_seed": 10}})
    assert s.seeds == (10, 11, 12, 13, 14)


def test_missing_and_malformed_spec_file(tmp_path):
    with pytest.raises(LrlabError, match="does not exist"):
        spec.load_toml(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [\n")
    with pytest.raises(LrlabError, match="not valid TOML"):
        spec.load_toml(bad)
