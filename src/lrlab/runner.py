"""The driver: spec -> data -> cohorts -> engine -> store -> verdicts -> report.

Everything that can fail on bad input (spec, data files, shapes) is checked before the
experiment folder is created, so a bad input leaves nothing behind. Each cohort is committed
to the store as it finishes; an existing folder with the same spec resumes where it stopped.
"""

from __future__ import annotations

import json
import platform
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lrlab import data as data_mod
from lrlab import engine, nets
from lrlab import spec as spec_mod
from lrlab.errors import LrlabError
from lrlab.spec import Cohort, Spec
from lrlab.store import DB_NAME, Store

SPEC_FILE = "spec.toml"


def version() -> str:
    from lrlab import __version__

    return __version__


# ----------------------------------------------------------------------------- inputs


def as_spec(spec: Spec | str | Path | Mapping[str, Any]) -> Spec:
    """A Spec from a Spec, a TOML path or a TOML-shaped dict."""
    if isinstance(spec, Spec):
        spec_mod.validate(spec)
        return spec
    if isinstance(spec, (str, Path)):
        return spec_mod.resolve(spec_mod.load_toml(spec))
    return spec_mod.resolve(dict(spec))


def load_data(spec: Spec) -> dict[spec_mod.DataSpec, data_mod.Dataset]:
    """Every distinct dataset of the sweep, loaded and checked against the model."""
    out: dict[spec_mod.DataSpec, data_mod.Dataset] = {}
    for m in spec_mod.members(spec):
        if m.data not in out:
            out[m.data] = data_mod.load(m.data)
        check_shapes(m, out[m.data])
    return out


def check_shapes(m: spec_mod.Member, ds: data_mod.Dataset) -> None:
    """The model's declared sizes, the output kind and the batch size must fit the data."""
    d_in = ds.X_train.shape[1]
    if m.model.input_dim is not None and m.model.input_dim != d_in:
        raise LrlabError(f"`[model].input_dim` is {m.model.input_dim} but the data "
                         f"{ds.name!r} has {d_in} input features")
    want = nets.output_dim(m.model.output, ds.n_classes)
    if m.model.output_dim is not None and m.model.output_dim != want:
        raise LrlabError(
            f"`[model].output_dim` is {m.model.output_dim} but the data {ds.name!r} has "
            f"{ds.n_classes} classes, which needs {want} output unit(s) with output "
            f"{m.model.output!r}")
    n = ds.X_train.shape[0]
    for t in (m.train, *m.phases):
        if t.batch_size > n:
            raise LrlabError(f"`[train].batch_size` is {t.batch_size} but the training set of "
                             f"{ds.name!r} has only {n} samples; use at most {n} (0 = full batch)")
    nets.layer_inits(m.model, len(m.model.hidden) + 1)


# ----------------------------------------------------------------------------- results


@dataclass
class Result:
    """A finished (or partly finished) experiment, read from its folder."""

    directory: Path
    spec: Spec

    @classmethod
    def load(cls, directory: str | Path) -> Result:
        d = Path(directory)
        store = Store.open(d)
        try:
            spec = spec_mod.resolve(json.loads(store.meta()["spec_json"]))
        finally:
            store.close()
        return cls(d, spec)

    def records(self) -> list[dict[str, Any]]:
        """One export record per member (see `lrlab export`)."""
        from lrlab.export import records

        return records(self.directory)

    def to_pandas(self) -> Any:
        """One row per member per epoch: swept values, status, verdict and metrics."""
        import pandas as pd

        rows = []
        for r in self.records():
            hist = r["history"]
            for i, ep in enumerate(hist["epoch"]):
                row = {"member_id": r["id"], **r["member"], "status": r["status"],
                       "verdict": r["verdict"]["label"] if r["verdict"] else None, "epoch": ep}
                # the lr actually applied (per epoch) must not shadow the swept lr
                row.update({("lr_applied" if k == "lr" else k): v[i]
                            for k, v in hist.items() if k != "epoch"})
                rows.append(row)
        return pd.DataFrame(rows)

    @property
    def report_path(self) -> Path:
        return self.directory / "report.html"


# ----------------------------------------------------------------------------- running


Backend = Callable[[Sequence[Cohort], Mapping[Any, data_mod.Dataset], Spec,
                    Callable[[int], None] | None], Iterator[list[engine.MemberRun]]]


def local_backend(cohorts: Sequence[Cohort], datasets: Mapping[Any, data_mod.Dataset],
                  spec: Spec, progress: Callable[[int], None] | None
                  ) -> Iterator[list[engine.MemberRun]]:
    """Run cohorts one after another in this process."""
    hooks = default_hooks(spec)
    for c in cohorts:
        with threads_for(c, datasets[c.first.data], spec.run.threads):
            yield engine.run_cohort(c, datasets[c.first.data], spec.run, hooks, progress)


SMALL_STEP_MACS = 2_000_000
"""Below this many multiply-adds per cohort step, one thread is as fast as two and immune to a
busy neighbour (notes/perf.md: a 2-thread small-op loop slowed 10-40x under contention)."""


@contextmanager
def threads_for(c: Cohort, ds: data_mod.Dataset, threads: int) -> Iterator[None]:
    """Use `threads` torch threads (0 = one for small cohorts, torch's default otherwise)."""
    m = c.first
    arch = nets.arch_for(m.model, ds.X_train.shape[1], ds.n_classes)
    batch = m.train.batch_size or ds.X_train.shape[0]
    macs = len(c.members) * min(batch, ds.X_train.shape[0]) * arch.n_params()
    want = threads or (1 if macs < SMALL_STEP_MACS else torch.get_num_threads())
    before = torch.get_num_threads()
    torch.set_num_threads(want)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def default_hooks(spec: Spec) -> list[engine.EpochHook]:
    """The probe hooks a sweep records when `[run].probes` is on."""
    if not spec.run.probes:
        return []
    try:
        from lrlab import probes
    except ImportError:
        return []
    return probes.hooks(spec)


def _meta(spec: Spec, command: str | None) -> dict[str, str]:
    return {
        "spec_json": json.dumps(spec_mod.to_dict(spec)),
        "spec_toml": spec_mod.to_toml(spec),
        "name": spec.name,
        "command": command or "",
        "lrlab_version": version(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "device": spec.run.device,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _prepare_dir(out: Path, spec: Spec) -> bool:
    """True when `out` already holds this experiment (resume); refuse a different one."""
    if (out / DB_NAME).is_file():
        store = Store.open(out)
        try:
            stored = store.meta().get("spec_json")
        finally:
            store.close()
        if stored != json.dumps(spec_mod.to_dict(spec)):
            raise LrlabError(
                f"{str(out)!r} already holds a different experiment; choose another --out "
                "or delete that folder")
        return True
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LrlabError(f"--out {str(out)!r} exists and is not an lrlab experiment folder; "
                         "choose another path")
    return False


def sweep(
    spec: Spec | str | Path | Mapping[str, Any],
    out: str | Path | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    backend: Backend | None = None,
    command: str | None = None,
    report: bool = True,
) -> Result:
    """Run a sweep and write its folder (store, spec, verdicts, report). Returns the Result.

    `progress(done, total)` is called as member-epochs finish. Bad input raises LrlabError
    before anything is written.
    """
    s = as_spec(spec)
    datasets = load_data(s)
    cohorts = spec_mod.cohorts(s, s.run.max_members_per_cohort or _auto_chunk(s, datasets))
    directory = Path(out) if out else Path("runs") / s.name
    resuming = _prepare_dir(directory, s)
    if backend is None:
        backend = _backend(s)
    created = not directory.exists()
    try:
        store = Store.create(directory, _meta(s, command) if not resuming else {},
                             [(m.index, c.index, m.swept) for c in cohorts for m in c.members])
    except Exception:
        if created:
            shutil.rmtree(directory, ignore_errors=True)
        raise
    try:
        if not resuming:
            (directory / SPEC_FILE).write_text(spec_mod.to_toml(s), encoding="utf-8")
        done_ids = store.finished_ids()
        todo = [c for c in cohorts if not all(m.index in done_ids for m in c.members)]
        total = sum(_member_epochs(m) for c in todo for m in c.members)
        count = [0]

        def tick(k: int) -> None:
            count[0] += k
            if progress:
                progress(count[0], total)

        t0 = time.perf_counter()
        for runs in backend(todo, datasets, s, tick):
            store.commit_runs(runs)
        store.set_meta(finished=time.strftime("%Y-%m-%d %H:%M:%S"),
                       train_seconds=f"{time.perf_counter() - t0:.3f}")
        finish(store, s, datasets)
    finally:
        store.close()
    if report:
        from lrlab import report as report_mod

        report_mod.build(directory)
    return Result(directory, s)


def _backend(s: Spec) -> Backend:
    if s.run.backend == "ray":
        try:
            from lrlab import distributed
        except ImportError as exc:
            raise LrlabError(f"--backend ray is not available: {exc}") from None
        return distributed.backend(s.run.address)
    return local_backend


def _member_epochs(m: spec_mod.Member) -> int:
    return m.train.epochs + sum(p.epochs for p in m.phases)


def _auto_chunk(s: Spec, datasets: Mapping[Any, data_mod.Dataset]) -> int:
    """Members per cohort so that one cohort's tensors stay near MEMORY_BUDGET bytes."""
    budget = MEMORY_BUDGET
    worst = 0
    for m in spec_mod.members(s):
        ds = datasets[m.data]
        arch = nets.arch_for(m.model, ds.X_train.shape[1], ds.n_classes)
        n = ds.X_train.shape[0] + ds.X_val.shape[0]
        per = 8 * (6 * arch.n_params() + max(arch.sizes) * (min(n, 4096) + 2 * max(
            m.train.batch_size, 1) * arch.n_layers))
        worst = max(worst, per)
    return max(1, int(budget // max(worst, 1))) if worst else 0


MEMORY_BUDGET = 1 * 2**30
"""Bytes one cohort may use for parameters, optimizer state and activations (an estimate)."""


def finish(store: Store, s: Spec, datasets: Mapping[Any, data_mod.Dataset]) -> None:
    """Judge every finished member and store the verdicts and the recommendation."""
    from lrlab import verdicts as v_mod

    views = run_views(store, s, datasets)
    verdicts = v_mod.judge_all(views)
    store.write_verdicts(verdicts)
    recs = recommendations(views, verdicts)
    store.set_meta(recommendation=json.dumps(recs))


def run_views(store: Store, s: Spec, datasets: Mapping[Any, data_mod.Dataset] | None = None
              ) -> list[Any]:
    from lrlab.verdicts import RunView

    hists = store.histories()
    members = {m.index: m for m in spec_mod.members(s)}
    views = []
    for row in store.members():
        if row["status"] is None:
            continue
        ds = (datasets or {}).get(members[row["id"]].data)
        views.append(RunView(row["id"], row["swept"], row["status"], row["diverged_epoch"],
                             hists.get(row["id"], {}), ds.n_classes if ds else 0))
    return views


def group_key(swept: Mapping[str, Any], drop: Sequence[str] = ("lr", "seed")) -> str:
    """A label for the members that differ only in the dropped axes (e.g. 'preprocess=none')."""
    parts = [f"{k}={_fmt(v)}" for k, v in swept.items() if k not in drop]
    return ", ".join(parts) or "all"


def _fmt(v: Any) -> str:
    if isinstance(v, list):
        return "-".join(map(str, v))
    return f"{v:g}" if isinstance(v, float) else str(v)


def recommendations(views: Sequence[Any], verdicts: Mapping[int, Any]) -> list[dict[str, Any]]:
    """One recommendation per group of runs that differ only in lr and seed."""
    from lrlab.verdicts import recommend

    groups: dict[str, list[Any]] = {}
    for v in views:
        groups.setdefault(group_key(v.swept), []).append(v)
    out = []
    for key, vs in groups.items():
        r = recommend(vs, dict(verdicts))
        out.append({"group": key, "best_lr": r.best_lr, "lr_range": r.lr_range,
                    "metric": r.metric, "at_edge": r.at_edge, "text": r.text})
    return out


def python_info() -> str:
    return f"Python {sys.version.split()[0]}, torch {torch.__version__}"
