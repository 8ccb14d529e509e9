"""Shared CLI helpers: console, progress bars, JSON output."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.progress import track as rich_track

console = Console(stderr=True)

#: ``--precision`` help text, shared by every command that runs a network.
PRECISION_HELP = ("auto (default: bf16 only on CUDA or a CPU with native bf16, AVX512-BF16/AMX; else fp32), "
                  "fp32 or bf16.")


def check_precision(precision: str) -> str:
    """Validate a ``--precision`` value (typer.BadParameter, exit code 2, for an unknown one)."""
    import typer

    if precision not in ("auto", "fp32", "bf16"):
        raise typer.BadParameter(f"{precision!r}: choose auto, fp32 or bf16", param_hint="--precision")
    return precision


def esc(value: Any) -> str:
    """``value`` as console text: a file name that is not UTF-8 shows its bytes as ``\\xNN`` and
    rich markup in it (``[/]``, ``[red]``) is printed as written, not interpreted."""
    from rich.markup import escape

    from ..data.images import display_name

    return escape(display_name(str(value)))


def track(iterable, description: str = "working", **_: Any):
    """rich progress bar on stderr (so ``--json`` stdout stays clean)."""
    return rich_track(iterable, description=description, console=console, transient=True)


def emit_json(obj: Any) -> None:
    """Print ``obj`` as JSON on stdout."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def open_service_db(data_dir, database_url: str | None, tenant: str | None):
    """``(session_factory, tenant id or None)`` of a carcheck service's database, migrated to head
    (a data dir of a service from before the review tables), for the CLI commands that read it.

    Raises:
        typer.BadParameter: ``data_dir`` holds no ``carcheck.db`` (and no ``--database-url``), or no
            tenant is called ``tenant``.
    """
    import typer
    from sqlalchemy import select

    from ..serve.db.models import Tenant
    from ..serve.db.session import make_engine, session_factory, sqlite_url, upgrade

    if database_url is None and not (data_dir / "carcheck.db").is_file():
        raise typer.BadParameter(f"{data_dir}: no carcheck.db (not a service data dir)", param_hint="--data-dir")
    engine = make_engine(database_url or sqlite_url(data_dir))
    upgrade(engine)
    factory = session_factory(engine)
    tid = None
    if tenant is not None:
        with factory() as s:
            tid = s.scalar(select(Tenant.id).where(Tenant.name == tenant))
        if tid is None:
            raise typer.BadParameter(f"no tenant {tenant!r}", param_hint="--tenant")
    return factory, tid
