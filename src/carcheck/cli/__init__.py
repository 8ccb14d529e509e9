"""The ``carcheck`` command line (typer). Sub-commands live in sibling modules, one per group."""

from __future__ import annotations

import typer

from . import dataset, evaluate, train
from .assess import assess_command

app = typer.Typer(name="carcheck", help="Vehicle inspection from ordinary photos.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"carcheck {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Vehicle inspection from ordinary photos. Every sub-command imports its models only when it runs."""


app.add_typer(dataset.app, name="dataset")
app.add_typer(train.app, name="train")
app.add_typer(evaluate.app, name="evaluate")
app.command("assess")(assess_command)


def main() -> None:
    """Entry point of the ``carcheck`` console script."""
    app()


__all__ = ["app", "main"]
