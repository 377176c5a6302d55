"""`lrlab compare DIR1 DIR2 ...`: one report over several experiments on shared axes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from lrlab.cli import app, fail, out
from lrlab.errors import LrlabError


def default_out(directories: list[Path]) -> Path:
    """`compare-A-B` beside the first experiment (names made filename-safe)."""
    names = [re.sub(r"[^A-Za-z0-9._-]+", "_", Path(d).resolve().name) or "x"
             for d in directories]
    return Path(directories[0]).resolve().parent / ("compare-" + "-".join(names))[:120]


def check_inputs(directories: list[Path], target: Path, overwrite: bool) -> None:
    """Every folder is a readable lrlab store, and the report may go to `target`: not one of
    the experiments compared, and not a folder holding another kind of result unless
    `overwrite` (LrlabError otherwise; reads only)."""
    from lrlab import folder
    from lrlab.store import Store

    if len(directories) < 2:
        raise LrlabError(f"`lrlab compare` needs at least 2 experiment folders; got "
                         f"{len(directories)}")
    for d in directories:
        Store.open(d).close()  # checks the store: missing, empty, garbled, foreign, version
        if Path(d).resolve() == target.resolve():
            raise LrlabError(f"--out {str(target)!r} is an experiment folder, one of those "
                             "compared; choose another folder for the comparison")
    folder.check_out(target, "compare", overwrite=overwrite)


@app.command()
def compare(
    directories: Annotated[list[Path], typer.Argument(help="two or more experiment folders")],
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="folder for the comparison report (default: compare-A-B beside DIR1)"
    )] = None,
    overwrite: Annotated[bool, typer.Option(
        help="replace another kind of lrlab result in --out (only lrlab's own files are "
             "removed)")] = False,
) -> None:
    """One report comparing experiments: lr vs outcome overlaid, verdicts, measurements."""
    from lrlab import folder
    from lrlab import report as report_mod

    try:
        target = out_dir or default_out(directories)
        check_inputs(directories, target, overwrite)
        if overwrite:
            folder.remove_own(target)
        path = report_mod.build_compare(directories, target)
    except LrlabError as exc:
        raise fail(exc) from None
    out.print(f"report: {path}", markup=False, highlight=False)
