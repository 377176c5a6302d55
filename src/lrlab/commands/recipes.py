"""`lrlab recipes list | show NAME | run NAME`: the seed scenarios, one command each."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from lrlab.cli import (
    MAX_MEMBERS_HELP,
    MAX_MEMORY_HELP,
    Bar,
    app,
    fail,
    interruptible,
    out,
    print_data_warnings,
    print_recommendation,
    summary_table,
)
from lrlab.errors import LrlabError

recipes_app = typer.Typer(no_args_is_help=True, help="The seed scenarios as ready-made "
                          "experiments: list them, print one as TOML, run one.")
app.add_typer(recipes_app, name="recipes")


def _say(text: str) -> None:
    out.print(text, markup=False, highlight=False, soft_wrap=True)


@recipes_app.command("list")
def list_() -> None:
    """Every recipe: its name, the seed question it answers and its size."""
    from lrlab import recipes
    from lrlab import spec as spec_mod

    for name in recipes.names():
        r = recipes.get(name)
        s = recipes.spec(name)
        n = len(spec_mod.members(s))
        seed = f"seed {r.seed}" if r.seed else ""
        _say(f"{name:<22}{seed:<10}{n:>5} runs  {r.question}")


@recipes_app.command()
def show(name: Annotated[str, typer.Argument(help="recipe name (see `lrlab recipes list`)")]
         ) -> None:
    """Print the recipe's TOML spec: copy it, edit it, run it with `lrlab sweep FILE`."""
    from lrlab import recipes

    try:
        text = recipes.text(name)
        r = recipes.get(name)
    except LrlabError as exc:
        raise fail(exc) from None
    sys.stdout.write(text)
    if r.example_path is not None:
        sys.stdout.write(f"# example file: {r.example_path} (`lrlab gradcheck` it)\n")


@recipes_app.command()
def run(
    name: Annotated[str, typer.Argument(help="recipe name (see `lrlab recipes list`)")],
    seeds: Annotated[int | None, typer.Option(help="seeds per configuration")] = None,
    epochs: Annotated[int | None, typer.Option(help="epochs (every phase)")] = None,
    smoke: Annotated[bool, typer.Option("--smoke", help="a tiny version: few epochs, "
                                        "seeds and samples (tests, a first look)")] = False,
    data: Annotated[str | None, typer.Option(help="replace the data source, e.g. "
                                             "mnist:PATH, fashion-mnist, moons")] = None,
    device: Annotated[str | None, typer.Option(help="cpu|cuda")] = None,
    max_members: Annotated[int | None, typer.Option(help=MAX_MEMBERS_HELP)] = None,
    max_memory_gb: Annotated[float | None, typer.Option(help=MAX_MEMORY_HELP)] = None,
    select: Annotated[str | None, typer.Option(help="val_loss|val_acc: what the recommended "
                                               "lr is chosen by")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="experiment folder "
                                                 "(default runs/NAME)")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace the lrlab result in --out (only "
                                            "lrlab's own files are removed)")] = False,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Run a recipe, then print its answer to the seed question (also in DIR/answer.txt)."""
    from lrlab import recipes

    try:
        run_keys = {"device": device, "max_members": max_members, "max_memory_gb": max_memory_gb,
                    "select": select}
        extra = {"run": {k: v for k, v in run_keys.items() if v is not None}}
        # validate everything before --overwrite deletes anything
        recipes.spec(name, smoke=smoke, seeds=seeds, epochs=epochs, data=data, extra=extra)
        target = out_dir or Path("runs") / (name + ("-smoke" if smoke else ""))
        command = "lrlab " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        with interruptible(), Bar(f"recipe {name}", enabled=not quiet) as bar:
            done = recipes.run(name, target, smoke=smoke, seeds=seeds, epochs=epochs,
                               data=data, progress=bar, command=command, extra=extra,
                               overwrite=overwrite)
    except LrlabError as exc:
        raise fail(exc) from None
    print_data_warnings(done.directory)
    out.print(summary_table(done.directory))
    print_recommendation(done.directory)
    _say("")
    for line in done.lines:
        _say(line)
    _say(f"report: {done.result.report_path}")
    _say(f"answer: {done.directory / recipes.ANSWER_FILE}")
