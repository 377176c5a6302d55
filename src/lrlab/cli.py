"""The `lrlab` command: a thin shell over the library.

Exit codes: 0 success; 2 a bad spec, flag or input file (one line on stderr, nothing written);
1 a failure while running; 3 `gradcheck` found a wrong gradient.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from lrlab.errors import LrlabError, bad_value

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="lrlab: learning-rate experiments that explain themselves.")
err = Console(stderr=True)
out = Console()


def fail(exc: Exception) -> typer.Exit:
    """A bad input: one line on stderr, exit code 2."""
    sys.stderr.write(f"lrlab: error: {exc}\n")  # one unwrapped line, whatever the terminal width
    return typer.Exit(code=2)


_SAID = [False]  # the interruption's line was written


def _interrupt_line(exc: BaseException | None) -> None:
    """Write Ctrl-C's one line on stderr: what a sweep kept and how to finish it
    (runner.Interrupted), else just that it was interrupted."""
    from_sweep = None
    seen = exc
    while seen is not None and from_sweep is None:  # (wrapped by click in Abort or Exit)
        if type(seen).__name__ == "Interrupted":
            from_sweep = seen
        seen = seen.__cause__ or seen.__context__
    if not _SAID[0]:
        sys.stderr.write(f"lrlab: {from_sweep or 'interrupted'}\n")
        _SAID[0] = True


@contextmanager
def interruptible() -> Iterator[None]:
    """Ctrl-C inside the block: its one line on stderr, then exit code 130."""
    try:
        yield
    except KeyboardInterrupt as exc:
        _interrupt_line(exc)
        raise typer.Exit(code=130) from None


# ----------------------------------------------------------------------------- parsing flags


def parse_floats(key: str, text: str) -> list[float]:
    """`0.5,0.1` or `logspace:1e-4:1:13` (13 values from 1e-4 to 1, log-spaced)."""
    text = text.strip()
    if text.startswith("logspace:"):
        parts = text.split(":")
        try:
            lo, hi, num = float(parts[1]), float(parts[2]), int(parts[3])
        except (IndexError, ValueError):
            raise bad_value(key, text, "logspace:LO:HI:N with LO, HI > 0 and an integer N >= 1"
                            ) from None
        if not (lo > 0 and hi > 0 and num >= 1 and len(parts) == 4):
            raise bad_value(key, text, "logspace:LO:HI:N with LO, HI > 0 and an integer N >= 1")
        if num > MAX_LOGSPACE:
            raise bad_value(key, text, f"logspace:LO:HI:N with N <= {MAX_LOGSPACE}")
        if num == 1:
            return [lo]
        a, b = math.log10(lo), math.log10(hi)
        return [float(f"{10 ** (a + (b - a) * i / (num - 1)):.6g}") for i in range(num)]
    vals = []
    for tok in text.split(","):
        try:
            vals.append(float(tok))
        except ValueError:
            raise bad_value(key, tok, "a number (comma-separated list, or logspace:LO:HI:N)"
                            ) from None
    return vals


def _num(v: float) -> int | float:
    return int(v) if float(v).is_integer() and abs(v) < 2**53 else v


def parse_model(text: str) -> dict[str, Any]:
    """`2-10-10-4` = input 2, hidden [10, 10], output 4."""
    try:
        sizes = [int(x) for x in text.split("-")]
    except ValueError:
        raise bad_value("--model", text, "layer sizes joined by '-', e.g. 2-10-10-4") from None
    if len(sizes) < 2 or any(s < 1 for s in sizes):
        raise bad_value("--model", text, "at least input and output sizes >= 1, e.g. 2-10-4")
    return {"input_dim": sizes[0], "hidden": sizes[1:-1], "output_dim": sizes[-1]}


def _axis_or_value(doc: dict[str, Any], section: str, key: str, values: list[Any]) -> None:
    """One value sets the key; several make it a sweep axis."""
    if len(values) == 1:
        doc.setdefault(section, {})[key] = values[0]
    else:
        doc.setdefault("sweep", {})[key] = values


def opt(help: str, *names: str) -> Any:
    """A typer Option with help text (keeps the signatures below on one line each)."""
    return typer.Option(*names, help=help)


# Flags shared by sweep and find (data / model / optimizer).
Data = Annotated[str | None, typer.Option("--data", help="blobs|moons|circles|spiral|xor|iris|wine"
                 "|digits|breast_cancer|csv:PATH|npz:PATH|parquet:PATH|mnist[:PATH]|"
                 "fashion-mnist[:PATH]")]
Model = Annotated[str | None, typer.Option(help="layer sizes, e.g. 2-10-10-10-10-4")]
Lr = Annotated[str | None, typer.Option(help="0.5,0.1 or logspace:1e-4:1:13 (list = axis)")]
MAX_MEMBERS_HELP = "refuse a sweep of more members (default 100000)"
MAX_MEMORY_HELP = "refuse a sweep whose memory estimate is larger (GB; default: this machine's)"
MAX_LOGSPACE = 1_000_000
"""The most values `logspace:LO:HI:N` expands to (a larger N is refused before expanding)."""


def overrides(
    *, data: str | None = None, n: int | None = None, classes: int | None = None,
    noise: float | None = None, data_seed: int | None = None, model: str | None = None,
    hidden: str | None = None, activation: str | None = None, output: str | None = None,
    init: str | None = None, bias_init: str | None = None, init_scale: str | None = None,
    optimizer: str | None = None, lr: str | None = None, momentum: str | None = None,
    weight_decay: str | None = None, beta1: str | None = None, beta2: str | None = None,
    eps: str | None = None, seeds: int | None = None, first_seed: int | None = None,
    epochs: int | None = None, batch_size: str | None = None,
    validation_split: float | None = None, split: str | None = None,
    label_column: str | None = None, preprocess: str | None = None,
    schedule: str | None = None, schedule_arg: list[str] | None = None,
    warmup: float | None = None, decay: float | None = None,
    device: str | None = None, dtype: str | None = None, backend: str | None = None,
    address: str | None = None, name: str | None = None, limit: int | None = None,
    max_members_per_cohort: int | None = None, no_probes: bool = False,
    max_members: int | None = None, max_memory_gb: float | None = None,
    shuffle: str | None = None,
    select: str | None = None,
) -> dict[str, Any]:
    """CLI flags as a TOML-shaped dict (the same keys a spec file uses)."""
    doc: dict[str, Any] = {}

    def put(section: str, key: str, value: Any) -> None:
        if value is not None:
            doc.setdefault(section, {})[key] = value

    put("data", "source", data)
    put("data", "n", n)
    put("data", "classes", classes)
    put("data", "noise", noise)
    put("data", "data_seed", data_seed)
    put("data", "validation_split", validation_split)
    put("data", "split", split)
    put("data", "label_column", label_column)
    put("data", "limit", limit)
    if preprocess:
        _axis_or_value(doc, "data", "preprocess", preprocess.split(","))
    if model:
        doc.setdefault("model", {}).update(parse_model(model))
    if hidden:
        m = parse_model("1-" + hidden + "-1")
        doc.setdefault("model", {})["hidden"] = m["hidden"]
    put("model", "activation", activation)
    put("model", "output", output)
    if init:
        _axis_or_value(doc, "model", "init", [_init_flag(x) for x in init.split(",")])
    put("model", "bias_init", _init_flag(bias_init) if bias_init else None)
    if init_scale:
        _axis_or_value(doc, "model", "init_scale", parse_floats("--init-scale", init_scale))
    if optimizer:
        _axis_or_value(doc, "train", "optimizer", optimizer.split(","))
    for key, text in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay),
                      ("beta1", beta1), ("beta2", beta2), ("eps", eps)):
        if text:
            _axis_or_value(doc, "train", key, parse_floats("--" + key.replace("_", "-"), text))
    if batch_size:
        _axis_or_value(doc, "train", "batch_size",
                       [int(_num(v)) for v in parse_floats("--batch-size", batch_size)])
    put("train", "epochs", epochs)
    if shuffle:
        _axis_or_value(doc, "train", "shuffle", [{"true": True, "false": False}.get(x, x)
                                                 for x in shuffle.split(",")])
    put("train", "schedule", schedule)
    args: dict[str, Any] = {}
    for item in schedule_arg or []:
        k, sep, v = item.partition("=")
        if not sep:
            raise bad_value("--schedule-arg", item, "KEY=VALUE")
        args[k] = _num(parse_floats("--schedule-arg " + k, v)[0]) if "," not in v else \
            [_num(x) for x in parse_floats("--schedule-arg " + k, v)]
    if warmup is not None:
        args["warmup"] = _num(warmup)
    if decay is not None:
        args["decay"] = decay
        doc.setdefault("train", {}).setdefault("schedule", "time_decay")
    if args:
        doc.setdefault("train", {})["schedule_args"] = args
    if seeds is not None or first_seed is not None:
        doc.setdefault("sweep", {})["seeds"] = seeds if seeds is not None else 1
        doc["sweep"]["first_seed"] = first_seed or 0
    put("run", "device", device)
    put("run", "dtype", dtype)
    put("run", "backend", backend)
    put("run", "address", address)
    put("run", "max_members_per_cohort", max_members_per_cohort)
    put("run", "max_members", max_members)
    put("run", "max_memory_gb", max_memory_gb)
    if no_probes:
        put("run", "probes", False)
    put("run", "select", select)
    if name is not None:
        doc["name"] = name
    return doc


def _init_flag(text: str) -> str:
    """`normal:0.05` as typed; also accept keras-style `normal(0.05)`."""
    t = text.strip()
    if "(" in t and t.endswith(")"):
        head, args = t[:-1].split("(", 1)
        t = ":".join([head, *[a.strip() for a in args.split(",")]])
    return t


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Flags override keys of the spec file (nested tables merged)."""
    outd = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(outd.get(k), dict):
            outd[k] = merge(outd[k], v)
        else:
            outd[k] = v
    # a flag that sets one value replaces an axis of the file for that key, and vice versa
    for section in ("data", "model", "train"):
        for k in over.get(section, {}):
            if k in outd.get("sweep", {}) and k not in over.get("sweep", {}):
                del outd["sweep"][k]
    for k in over.get("sweep", {}):
        for section in ("data", "model", "train"):
            if k in outd.get(section, {}) and k not in over.get(section, {}):
                del outd[section][k]
    return outd


# ----------------------------------------------------------------------------- progress


class Bar:
    """A rich progress bar over member-epochs (stderr, so stdout stays clean)."""

    def __init__(self, label: str, enabled: bool = True) -> None:
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.completed}/{task.total} member-epochs"),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=err,
                                 disable=not enabled, transient=False)
        self.task = self.progress.add_task(label, total=None)

    def __enter__(self) -> Bar:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, done: int, total: int) -> None:
        self.progress.update(self.task, completed=done, total=total)


def summary_table(directory: Path) -> Table:
    """One row per configuration (one column per swept axis), seeds aggregated."""
    from lrlab.export import records
    from lrlab.report import verdict_rows

    rows = verdict_rows(records(directory))
    axes = list(dict.fromkeys(k for r in rows for k in r["member"] if k != "seed"))
    t = Table(title=f"lrlab: {directory}", show_lines=False)
    for col in (*axes, "seeds", "val loss (median)", "val acc (median)", "verdicts"):
        t.add_column(col, overflow="fold")
    for r in rows:
        vals = [_cell(r["member"].get(k)) for k in axes]
        t.add_row(*vals, str(r["seeds"]),
                  "–" if r["median_val_loss"] is None else f"{r['median_val_loss']:.4g}",
                  "–" if r["median_val_acc"] is None else f"{r['median_val_acc']:.3f}",
                  r["summary"])
    return t


def _cell(v: Any) -> str:
    if isinstance(v, list):
        return "-".join(map(str, v))
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def print_data_warnings(directory: Path) -> list[str]:
    """One line per dataset whose held-out part's classes do not match the training part's
    (returned too)."""
    from lrlab import data as data_mod
    from lrlab.store import Store

    store = Store.open(directory)
    try:
        meta = store.meta()
    finally:
        store.close()
    lines = data_mod.balance_warnings(meta)
    for line in lines:
        out.print(line, markup=False, highlight=False, soft_wrap=True)
    return lines


UNRELIABLE_NOTE = ("The recommendation above rests on validation numbers, which are unreliable "
                   "here: see the warning above the table.")


def print_recommendation(directory: Path) -> None:
    from lrlab.store import Store

    store = Store.open(directory)
    try:
        recs = json.loads(store.meta().get("recommendation", "[]"))
    finally:
        store.close()
    for r in recs:
        head = f"[{r['group']}] " if len(recs) > 1 else ""
        out.print(head + r["text"], markup=False, highlight=False)


# ----------------------------------------------------------------------------- commands


@app.command()
def sweep(
    spec_file: Annotated[Path | None, typer.Argument(
        metavar="[SPEC.toml]", help="a TOML spec; flags override keys")] = None,
    data: Data = None,
    model: Model = None,
    activation: Annotated[str | None, opt("relu|leaky_relu|tanh|sigmoid|gelu|linear")] = None,
    output: Annotated[str | None, opt("softmax|sigmoid|quadratic")] = None,
    init: Annotated[str | None, typer.Option(help="normal:0.05|uniform:0:1|keras|pytorch|nielsen|"
                                             "glorot_uniform|he_normal|... (list = axis)")] = None,
    bias_init: Annotated[str | None, opt("bias initializer (default: per preset)")] = None,
    init_scale: Annotated[str | None, opt("multiply initial weights (list = axis)")] = None,
    optimizer: Annotated[str | None, typer.Option(help="sgd|momentum|nesterov|adagrad|rmsprop|"
                                                  "adam|adamw (list = axis)")] = None,
    lr: Lr = None,
    momentum: Annotated[str | None, opt("momentum (list = axis)")] = None,
    weight_decay: Annotated[str | None, opt("L2 / decoupled decay (list = axis)")] = None,
    beta1: Annotated[str | None, opt("Adam beta1 (list = axis)")] = None,
    beta2: Annotated[str | None, opt("Adam beta2 (list = axis)")] = None,
    seeds: Annotated[int | None, opt("number of seeds per configuration")] = None,
    first_seed: Annotated[int | None, opt("first seed (seeds S..S+N-1)")] = None,
    epochs: Annotated[int | None, opt("epochs per run")] = None,
    batch_size: Annotated[str | None, opt("minibatch size, 0 = full batch (list = axis)")] = None,
    shuffle: Annotated[str | None, opt("data order: epoch (new each epoch) | once (one per "
                                       "run, seeded Keras/TF) | none (list = axis)")] = None,
    validation_split: Annotated[float | None, opt("held-out fraction")] = None,
    split: Annotated[str | None, opt("stratified (default)|last (Keras)|random|given")] = None,
    preprocess: Annotated[str | None, opt("none|standardize|minmax (list = axis)")] = None,
    schedule: Annotated[str | None, typer.Option(help="constant|time_decay|step|multistep|"
                                                 "exponential|cosine|cosine_restarts|onecycle|"
                                                 "cyclic|plateau")] = None,
    schedule_arg: Annotated[list[str] | None, typer.Option(help="schedule parameter KEY=VALUE "
                                                           "(repeatable)")] = None,
    warmup: Annotated[float | None, opt("linear warmup epochs")] = None,
    decay: Annotated[float | None, opt("Keras time-based decay per iteration")] = None,
    n: Annotated[int | None, opt("synthetic data: samples")] = None,
    classes: Annotated[int | None, opt("synthetic data: classes")] = None,
    noise: Annotated[float | None, opt("synthetic data: noise")] = None,
    data_seed: Annotated[int | None, opt("seed of data generation / split")] = None,
    label_column: Annotated[str | None, opt("CSV/Parquet label column")] = None,
    limit: Annotated[int | None, opt("use only the first N training samples")] = None,
    device: Annotated[str | None, opt("cpu|cuda")] = None,
    dtype: Annotated[str | None, opt("float32|float64")] = None,
    backend: Annotated[str | None, opt("local|ray")] = None,
    address: Annotated[str | None, opt("Ray cluster HOST:PORT")] = None,
    max_members_per_cohort: Annotated[int | None, opt("cohort size cap")] = None,
    max_members: Annotated[int | None, opt(MAX_MEMBERS_HELP)] = None,
    max_memory_gb: Annotated[float | None, opt(MAX_MEMORY_HELP)] = None,
    no_probes: Annotated[bool, typer.Option("--no-probes", help="skip probe measurements")] = False,
    select: Annotated[str | None, opt("val_loss|val_acc: what the recommended lr is chosen "
                                      "by (default val_loss)")] = None,
    name: Annotated[str | None, opt("experiment name")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="experiment folder")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace the lrlab result in --out (only "
                                            "lrlab's own files are removed)")] = False,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Run a learning-rate sweep: one batched model per cohort; writes store and report."""
    from lrlab import spec as spec_mod

    try:
        doc = spec_mod.load_toml(spec_file) if spec_file else {}
        over = overrides(
            data=data, n=n, classes=classes, noise=noise, data_seed=data_seed, model=model,
            activation=activation, output=output, init=init, bias_init=bias_init,
            init_scale=init_scale, optimizer=optimizer, lr=lr, momentum=momentum,
            weight_decay=weight_decay, beta1=beta1, beta2=beta2, seeds=seeds,
            first_seed=first_seed, epochs=epochs, batch_size=batch_size,
            validation_split=validation_split, split=split, label_column=label_column,
            preprocess=preprocess, schedule=schedule, schedule_arg=schedule_arg, warmup=warmup,
            decay=decay, device=device, backend=backend, address=address, name=name,
            limit=limit, dtype=dtype, max_members_per_cohort=max_members_per_cohort,
            no_probes=no_probes, max_members=max_members, max_memory_gb=max_memory_gb,
            shuffle=shuffle, select=select)
        spec = spec_mod.resolve(merge(doc, over))
        from lrlab import runner

        target = out_dir or runner.default_out(spec)
        command = "lrlab " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        run_sweep(spec, target, command, quiet, overwrite)
    except LrlabError as exc:
        raise fail(exc) from None


def run_sweep(spec: Any, target: Path, command: str, quiet: bool, overwrite: bool = False
              ) -> None:
    """Run with a progress bar, then print the summary table and the recommendation.
    `overwrite` replaces the lrlab result in `target` (only lrlab's files are removed)."""
    from lrlab import runner

    with interruptible(), Bar(f"sweep {spec.name}", enabled=not quiet) as bar:
        result = runner.sweep(spec, target, progress=bar, command=command, overwrite=overwrite)
    warned = print_data_warnings(result.directory)
    out.print(summary_table(result.directory))
    print_recommendation(result.directory)
    if warned:
        out.print(UNRELIABLE_NOTE, markup=False, highlight=False)
    out.print(f"report: {result.report_path}", markup=False, highlight=False)


@app.command()
def export(
    directory: Annotated[Path, typer.Argument(help="experiment folder")],
    format: Annotated[str, typer.Option("--format", help="json (JSON Lines) | csv")] = "json",
) -> None:
    """Print the stored results: JSON Lines (one object per member) or CSV."""
    from lrlab import export as export_mod

    try:
        if format not in ("json", "csv"):
            raise bad_value("--format", format, "json or csv")
        text = export_mod.to_jsonl(directory) if format == "json" else export_mod.to_csv(directory)
    except LrlabError as exc:
        raise fail(exc) from None
    sys.stdout.write(text)


@app.command()
def report(directory: Annotated[Path, typer.Argument(help="experiment folder")]) -> None:
    """Rebuild report.html from the store (no retraining; never from fewer finished members
    than the report it replaces)."""
    from lrlab import report as report_mod

    try:
        path = report_mod.build(directory)
    except LrlabError as exc:
        raise fail(exc) from None
    out.print(f"report: {path}", markup=False, highlight=False)


@app.command()
def explain(
    directory: Annotated[Path, typer.Argument(help="experiment folder")],
    lr: Annotated[float | None, opt("only runs at this learning rate")] = None,
) -> None:
    """Print each configuration's verdict, evidence and explanation in words."""
    from lrlab.export import records
    from lrlab.report import verdict_rows

    try:
        recs = records(directory)
    except LrlabError as exc:
        raise fail(exc) from None
    if lr is not None:
        recs = [r for r in recs if isinstance(r["member"].get("lr"), (int, float))
                and math.isclose(r["member"]["lr"], lr, rel_tol=1e-9)]
        if not recs:
            raise fail(LrlabError(f"`--lr` {lr:g} is not a learning rate of this experiment"))
    for row in verdict_rows(recs):
        out.print(f"[bold]{row['config']}[/bold] ({row['summary']})")
        for item in row["by_label"]:  # one run per label that occurs
            seed = f", seed {item['seed']} shown" if item.get("seed") is not None else ""
            out.print(f"  {item['label']} ({item['count']}/{row['seeds']}{seed}): "
                      + item["explanation"], markup=False, highlight=False)
            out.print("    evidence: " + evidence_text(item["evidence"]), markup=False,
                      highlight=False)
    print_recommendation(directory)


def evidence_text(evidence: dict[str, Any]) -> str:
    """`key=value, ...` with numbers to 4 significant digits (lists too)."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, list):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        return str(v)

    return ", ".join(f"{k}={fmt(v)}" for k, v in evidence.items())


@app.command()
def resume(
    directory: Annotated[Path, typer.Argument(help="experiment folder")],
    backend: Annotated[str | None, opt("local|ray (default: as the sweep was started)")] = None,
    address: Annotated[str | None, opt("Ray cluster HOST:PORT")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Finish an interrupted sweep: run only the cohorts not yet committed, as they were."""
    from lrlab import runner
    from lrlab import spec as spec_mod
    from lrlab.store import Store

    try:
        res = runner.Result.load(directory)
        store = Store.open(directory)
        command = store.meta().get("command", "")
        store.close()
        spec = res.spec
        if backend is not None or address is not None:  # both replace the stored ones
            b = backend or ("ray" if address else spec.run.backend)
            spec = spec_mod.from_dict({"run": {"backend": b, "address": address}}, spec)
            spec_mod.validate(spec)
        run_sweep(spec, directory, command, quiet)
    except LrlabError as exc:
        raise fail(exc) from None


@app.command()
def gradcheck(file: Annotated[Path, typer.Argument(help="FILE.py defining params, loss, grads")]
              ) -> None:
    """Compare a hand-written backward pass with finite differences (exit 3 when wrong)."""
    from lrlab.gradcheck import main as gradcheck_main

    try:
        code = gradcheck_main(file)
    except LrlabError as exc:
        raise fail(exc) from None
    raise typer.Exit(code=code)


from lrlab import commands as _commands  # noqa: E402  (registers find, recipes, compare, ...)

_commands.register()


def main() -> None:
    """Console entry point: bad input (a flag, a spec, a file) is one line on stderr and exit
    code 2; a failure while running is exit code 1; Ctrl-C is 130, with one line saying what
    was kept."""
    _SAID[0] = False
    try:
        code = app(standalone_mode=False)
    except LrlabError as exc:  # pragma: no cover - commands catch their own
        sys.stderr.write(f"lrlab: error: {exc}\n")
        sys.exit(2)
    except KeyboardInterrupt as exc:
        _interrupted(exc)
    except Exception as exc:
        if type(exc).__name__ == "Abort":  # typer's wrapper of KeyboardInterrupt
            _interrupted(exc)
        if getattr(exc, "exit_code", None) == 2 and hasattr(exc, "format_message"):
            message = " ".join(exc.format_message().split())  # a usage error, as one line
            ctx = getattr(exc, "ctx", None)
            sub = f" {ctx.info_name}" if ctx is not None and ctx.parent is not None else ""
            if message:  # (an empty one: `lrlab` alone, whose help is already printed)
                sys.stderr.write(f"lrlab: error: {message} (see `lrlab{sub} --help`)\n")
            sys.exit(2)
        sys.stderr.write(f"lrlab: failed: {type(exc).__name__}: {exc}\n")  # while running
        sys.exit(1)
    if code == 130:  # typer turns Ctrl-C into exit code 130, silently
        _interrupt_line(None)
    sys.exit(code if isinstance(code, int) else 0)


def _interrupted(exc: BaseException) -> None:
    _interrupt_line(exc)
    sys.exit(130)


if __name__ == "__main__":
    main()
