"""The ``carcheck`` command line (typer). Sub-commands live in sibling modules, one per group."""

from __future__ import annotations

import typer

from . import dataset, evaluate, train
from .assess import assess_command

app = typer.Typer(name="carcheck", help="Vehicle inspection from ordinary photos.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)
app.add_typer(dataset.app, name="dataset")
app.add_typer(train.app, name="train")
app.add_typer(evaluate.app, name="evaluate")
app.command("assess")(assess_command)


def main() -> None:
    """Entry point of the ``carcheck`` console script."""
    app()


__all__ = ["app", "main"]
