"""The seed scenarios as recipes: TOML specs shipped in the package, one command each.

Each `NAME.toml` in this folder is an ordinary lrlab spec (what `lrlab sweep FILE` reads),
with comments saying which original experiment it reproduces and how. `lrlab recipes show NAME`
prints it so a user can copy and edit it. The registry below adds what a TOML file cannot
hold: the reduced `--smoke` settings and the function that answers the recipe's question from
the finished experiment (`lrlab.recipes.answers`).

    >>> from lrlab import recipes
    >>> recipes.names()[:2]
    ['blobs-deep-relu', 'blobs-10']
    >>> s = recipes.spec("iris-keras", smoke=True)
    >>> s.train.epochs, s.seeds
    (3, (0,))
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import tomllib

from lrlab.errors import bad_value

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
"""The shipped example files (`seed001_fnn.py`: the question's numpy network, db1 bug and all)."""


@dataclass(frozen=True)
class Recipe:
    """One seed scenario: its spec file's name, the seed it answers and its extra settings."""

    name: str
    seed: str  # the seed document it comes from: "000" ... "004"
    question: str  # the question, in one line
    smoke: Mapping[str, Any] = field(default_factory=dict)  # TOML-shaped overrides for --smoke
    example: str | None = None  # a shipped example file the answer uses (relative to EXAMPLES)
    answer: str | None = None  # name of the answer function in lrlab.recipes.answers

    @property
    def example_path(self) -> Path | None:
        return EXAMPLES / self.example if self.example else None


_TINY = {"train": {"epochs": 3}, "sweep": {"seeds": 1}}

REGISTRY: dict[str, Recipe] = {r.name: r for r in (
    Recipe("blobs-deep-relu", "000",
           "why does lr 0.5 give bad accuracy and 0.001 predict one class, why does "
           "standardizing change it, and do dead ReLUs matter?",
           {"data": {"n": 200}, "train": {"epochs": 3},
            "sweep": {"seeds": 1, "lr": [0.5, 0.001]}}, answer="blobs"),
    Recipe("blobs-10", "000",
           "the same questions on the question's own 10 samples (8 train, 2 validation)",
           {"train": {"epochs": 3}, "sweep": {"seeds": 2}}, answer="blobs"),
    Recipe("tanh-fullbatch", "001",
           "why does the loss spike at the start when the lr is raised, and are the "
           "gradients calculated wrong?",
           {"train": {"epochs": 3}, "sweep": {"seeds": 1, "lr": [0.01, 1.0],
                                              "init_scale": [1.0, 3.0]}},
           example="seed001_fnn.py", answer="tanh"),
    Recipe("mnist-nielsen", "003",
           "Nielsen's 784-20-10 network: test accuracy per epoch, as his code prints it",
           {"data": {"limit": 500}, "train": {"epochs": 2}, "sweep": {"seeds": 1}},
           answer="nielsen"),
    Recipe("mnist-break-recover", "003",
           "why does a network broken by lr 300 (batch 5000) not recover at lr 3.0 "
           "(batch 10) when a fresh one learns in one epoch?",
           {"data": {"limit": 500}, "train": {"epochs": 2, "batch_size": 250},
            "phases": [{"name": "recover", "lr": 3.0, "batch_size": 10, "epochs": 2}],
            "sweep": {"seeds": 1}},
           answer="break_recover"),
    Recipe("iris-keras", "004",
           "how do fixed learning rates 0.2, 0.1, 0.03 and 0.01 train the article's "
           "Keras iris network?", _TINY, answer="iris"),
    Recipe("iris-keras-decay", "004",
           "what does Keras' time-based decay (0.01 per iteration) change?", _TINY,
           answer="iris"),
    Recipe("schedules-tour", "002",
           "fixed vs step/exponential/cosine/time-based decay vs Adagrad/RMSprop/Adam: "
           "which wins on validation data, at which lr?",
           {"data": {"limit": 300}, "train": {"epochs": 2},
            "sweep": {"seeds": 1, "lr": [0.1], "hidden": [[8], [8, 8]],
                      "optimizer": ["sgd", "adam"],
                      "schedule": ["constant", "step", "time_decay"]}},
           answer="tour"),
)}


# ----------------------------------------------------------------------------- the files


def _files() -> dict[str, Any]:
    return {p.name[: -len(".toml")]: p for p in resources.files(__name__).iterdir()
            if p.name.endswith(".toml")}


def names() -> list[str]:
    """Every shipped recipe: by seed, then in registry order (unregistered ones last)."""
    order = {n: (r.seed, i) for i, (n, r) in enumerate(REGISTRY.items())}
    return sorted(_files(), key=lambda n: order.get(n, ("999", 0, n)))


def get(name: str) -> Recipe:
    """The registry entry of a shipped recipe (a bare one for a file not in the registry)."""
    if name not in _files():
        raise bad_value("recipe", name, "one of " + ", ".join(names()))
    return REGISTRY.get(name) or Recipe(name, "", title(name))


def text(name: str) -> str:
    """The recipe's TOML file, comments included (what `lrlab recipes show` prints)."""
    get(name)
    return _files()[name].read_text(encoding="utf-8")


def title(name: str) -> str:
    """The first comment line of the recipe's file."""
    for line in _files()[name].read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return name


def load(name: str) -> dict[str, Any]:
    """The recipe as a TOML-shaped dict."""
    return tomllib.loads(text(name))


# ----------------------------------------------------------------------------- resolving


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Tables merged key by key; any other value (lists included) replaced."""
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def document(name: str, *, smoke: bool = False, seeds: int | None = None,
             epochs: int | None = None, data: str | None = None,
             extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The recipe's TOML dict with --smoke, then the flags, then `extra` applied (later wins).

    `epochs` sets every phase's epochs too (break-recover's two phases both get N); `data`
    replaces `[data].source` (e.g. `mnist:PATH`, `fashion-mnist`, `moons`).
    """
    doc = load(name)
    if smoke:
        doc = merge(doc, get(name).smoke)
    over: dict[str, Any] = {}
    if seeds is not None:
        if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
            raise bad_value("--seeds", seeds, "an integer >= 1")
        over["sweep"] = {"seeds": seeds}
    if epochs is not None:
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise bad_value("--epochs", epochs, "an integer >= 1")
        over["train"] = {"epochs": epochs}
    if data is not None:
        over["data"] = {"source": data}
    doc = merge(doc, over)
    if epochs is not None:
        for p in doc.get("phases", []):
            p["epochs"] = epochs
    if extra:
        doc = merge(doc, extra)
    return doc


def spec(name: str, **kw: Any) -> Any:
    """The recipe's validated `Spec` (keyword arguments as `document`)."""
    from lrlab import spec as spec_mod

    return spec_mod.resolve(document(name, **kw))


# ----------------------------------------------------------------------------- running


ANSWER_FILE = "answer.txt"


@dataclass
class RecipeRun:
    """A finished recipe: the experiment's Result and the answer's lines."""

    name: str
    result: Any  # lrlab.runner.Result
    lines: list[str]

    @property
    def directory(self) -> Path:
        return Path(self.result.directory)


def run(name: str, out: str | Path | None = None, *, smoke: bool = False,
        seeds: int | None = None, epochs: int | None = None, data: str | None = None,
        progress: Callable[[int, int], None] | None = None, command: str | None = None,
        extra: Mapping[str, Any] | None = None, overwrite: bool = False) -> RecipeRun:
    """Run a recipe (a sweep of its spec), then answer its question; the answer is also
    written to `answer.txt` in the experiment folder. Default folder: runs/NAME[-smoke].
    `overwrite` replaces the lrlab result there (runner.sweep)."""
    from lrlab import report, runner

    s = spec(name, smoke=smoke, seeds=seeds, epochs=epochs, data=data, extra=extra)
    target = Path(out) if out else Path("runs") / (name + ("-smoke" if smoke else ""))
    result = runner.sweep(s, target, progress=progress, command=command, overwrite=overwrite,
                          report=False)
    lines = answer(name, result.directory)
    (Path(result.directory) / ANSWER_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    report.build(result.directory)  # after answer.txt: the report's answer box leads with it
    return RecipeRun(name, result, lines)


def answer(name: str, directory: str | Path) -> list[str]:
    """The recipe's answer to its question, as lines of text, from a finished experiment.

    The first line is the title (`== NAME (seed S): question`); a warning about the held-out
    part's classes, when there is one, follows it, so it tops every answer."""
    from lrlab.recipes import answers

    r = get(name)
    fn = getattr(answers, r.answer) if r.answer else answers.generic
    lines = fn(Path(directory), r)
    return lines[:1] + answers.data_warnings(Path(directory)) + lines[1:]


__all__ = ["ANSWER_FILE", "EXAMPLES", "REGISTRY", "Recipe", "RecipeRun", "answer", "document",
           "get", "load", "merge", "names", "run", "spec", "text", "title"]

