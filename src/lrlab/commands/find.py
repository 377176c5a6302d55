"""`lrlab find`: the learning-rate range test on an lrlab net (see `lrlab.finder`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from lrlab.cli import Data, Model, app, fail, merge, opt, overrides
from lrlab.errors import LrlabError, bad_value


@app.command()
def find(
    spec_file: Annotated[Path | None, typer.Argument(
        metavar="[SPEC.toml]", help="a TOML spec; flags override keys")] = None,
    data: Data = None,
    model: Model = None,
    activation: Annotated[str | None, opt("relu|leaky_relu|tanh|sigmoid|gelu|linear")] = None,
    output: Annotated[str | None, opt("softmax|sigmoid|quadratic")] = None,
    init: Annotated[str | None, opt("normal:0.05|uniform:0:1|keras|pytorch|nielsen|...")] = None,
    bias_init: Annotated[str | None, opt("bias initializer (default: per preset)")] = None,
    init_scale: Annotated[str | None, opt("multiply initial weights")] = None,
    optimizer: Annotated[str | None, opt("sgd|momentum|nesterov|adagrad|rmsprop|adam|adamw")
                         ] = None,
    momentum: Annotated[str | None, opt("momentum")] = None,
    weight_decay: Annotated[str | None, opt("L2 / decoupled weight decay")] = None,
    beta1: Annotated[str | None, opt("Adam beta1")] = None,
    beta2: Annotated[str | None, opt("Adam beta2")] = None,
    seeds: Annotated[int | None, opt("number of seeds, run as one cohort (default 5)")] = None,
    first_seed: Annotated[int | None, opt("first seed (seeds S..S+N-1)")] = None,
    batch_size: Annotated[str | None, opt("minibatch size, 0 = full batch")] = None,
    validation_split: Annotated[float | None, opt("held-out fraction")] = None,
    split: Annotated[str | None, opt("stratified (default)|last (Keras)|random|given")] = None,
    preprocess: Annotated[str | None, opt("none|standardize|minmax")] = None,
    n: Annotated[int | None, opt("synthetic data: samples")] = None,
    classes: Annotated[int | None, opt("synthetic data: classes")] = None,
    noise: Annotated[float | None, opt("synthetic data: noise")] = None,
    data_seed: Annotated[int | None, opt("seed of data generation / split")] = None,
    label_column: Annotated[str | None, opt("CSV/Parquet label column")] = None,
    limit: Annotated[int | None, opt("use only the first N training samples")] = None,
    device: Annotated[str | None, opt("cpu|cuda")] = None,
    dtype: Annotated[str | None, opt("float32|float64")] = None,
    start_lr: Annotated[float, opt("first lr of the ramp")] = 1e-7,
    end_lr: Annotated[float, opt("last lr of the ramp")] = 10.0,
    num_iter: Annotated[int, opt("steps of the ramp")] = 100,
    mode: Annotated[str, opt("exp | linear ramp")] = "exp",
    smooth: Annotated[float, opt("EMA factor of the loss (0 = none)")] = 0.98,
    diverge_th: Annotated[float, opt("stop a seed when its loss > this x its best")] = 4.0,
    check: Annotated[bool, typer.Option(
        "--check/--no-check", help="train short runs at x0.3, x1 and x3 of each suggestion and "
        "recommend one lr (default); --no-check: the raw ramp only")] = True,
    epochs: Annotated[int | None, opt("epochs of each check run: the horizon you will train "
                                      "for (default: ~200 steps)")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    out_dir: Annotated[Path | None, typer.Option("--out", help="write find.json, find.png and "
                                                 "report.html here")] = None,
    overwrite: Annotated[bool, typer.Option(
        help="write into an --out folder that holds another kind of result (replaces only "
        "find.json, find.png and report.html)")] = False,
) -> None:
    """Learning-rate range test: ramp the lr with several seeds at once, then train short runs
    at the suggestions and print one verified lr ("Use lr X")."""
    from lrlab import finder, finder_nets
    from lrlab import spec as spec_mod

    try:
        doc = spec_mod.load_toml(spec_file) if spec_file else {}
        over = overrides(
            data=data, n=n, classes=classes, noise=noise, data_seed=data_seed, model=model,
            activation=activation, output=output, init=init, bias_init=bias_init,
            init_scale=init_scale, optimizer=optimizer, momentum=momentum,
            weight_decay=weight_decay, beta1=beta1, beta2=beta2, epochs=epochs,
            batch_size=batch_size, validation_split=validation_split, split=split,
            label_column=label_column, preprocess=preprocess, device=device, dtype=dtype,
            limit=limit)
        spec = spec_mod.resolve(merge(doc, over))
        if first_seed is not None and first_seed < 0:
            raise bad_value("--first-seed", first_seed, "an integer >= 0")
        if seeds is not None and seeds < 1:
            raise bad_value("--seeds", seeds, "an integer >= 1")
        if seeds is None and first_seed is None and len(spec.seeds) > 1:
            seed_list = spec.seeds  # the spec file's seeds
        else:
            seed_list = spec_mod.parse_seeds(5 if seeds is None else seeds, first_seed or 0)
        settings = finder.Settings(start_lr, end_lr, num_iter, mode, smooth, diverge_th)
        finder.check_settings(settings, flags=True)
        if out_dir is not None:  # before any work: a refused folder costs nothing
            finder.check_out_dir(out_dir, overwrite)
        result = finder_nets.find_spec(spec, settings, seed_list, check=check, epochs=epochs)
        report = result.save(out_dir, overwrite=overwrite) if out_dir else None
    except LrlabError as exc:
        raise fail(exc) from None
    if json_out:
        sys.stdout.write(json.dumps(result.to_json()) + "\n")
        if report:
            sys.stderr.write(f"report: {report}\n")
        return
    lines = result.summary() + ([f"report: {report}"] if report else [])
    sys.stdout.write("\n".join(lines) + "\n")  # plain lines: never wrapped to the terminal
