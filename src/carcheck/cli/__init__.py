"""The ``carcheck`` command line (typer). Sub-commands live in sibling modules, one per group."""

from __future__ import annotations

import typer

from . import dataset, evaluate, export, train
from .assess import assess_command
from .batch import batch_command
from .compare import compare_command
from . import keys
from . import privacy, review, users, webhooks
from .serve import serve_command

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
app.add_typer(export.app, name="export")
app.command("assess")(assess_command)
app.command("batch")(batch_command)
app.command("compare")(compare_command)
app.command("serve")(serve_command)
app.add_typer(keys.app, name="keys")
app.add_typer(users.app, name="users")
app.add_typer(review.app, name="review")
app.add_typer(webhooks.app, name="webhooks")
app.add_typer(privacy.app, name="privacy")


#: Exit code of an unexpected exception (a bug), distinct from 1 ("some input had problems",
#: e.g. a file that could not be read) and 2 (usage error).
INTERNAL_ERROR = 3


def main() -> None:
    """Entry point of the ``carcheck`` console script.

    Exit codes: 0 ok, 1 problems found in the input (each named in the output), 2 usage error,
    3 internal error: an unexpected exception prints its traceback and exits 3, never 1.
    """
    import sys

    try:
        app()
    except Exception as e:  # click/typer already turned usage errors and typer.Exit into SystemExit
        import traceback

        traceback.print_exception(e, file=sys.stderr)
        print(f"carcheck: internal error ({type(e).__name__}); this is a bug, exit code {INTERNAL_ERROR}",
              file=sys.stderr)
        sys.exit(INTERNAL_ERROR)


__all__ = ["app", "main"]
