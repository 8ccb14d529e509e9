"""``carcheck keys create``: API keys of the service's tenants."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._common import console

app = typer.Typer(help="API keys of the carcheck service.", no_args_is_help=True)


@app.command("create")
def create(
    tenant: str = typer.Option(..., "--tenant", help="Tenant name (created if new)."),
    data_dir: Path = typer.Option(Path("carcheck-data"), "--data-dir", help="The service's data dir."),
    database_url: Optional[str] = typer.Option(None, "--database-url", envvar="CARCHECK_DATABASE_URL",
                                               help="The service's database (default: SQLite in the data dir)."),
    name: Optional[str] = typer.Option(None, help="A label for the key."),
) -> None:
    """Create an API key for TENANT and print it (only once: the database keeps its SHA-256)."""
    from ..serve.auth import create_key
    from ..serve.db.session import make_engine, session_factory, sqlite_url, upgrade

    try:
        if database_url is None:
            data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(database_url or sqlite_url(data_dir))
        upgrade(engine)
        with session_factory(engine)() as s:
            key = create_key(s, tenant, name)
            s.commit()
    except (ValueError, OSError) as e:
        console.print(f"[red]error:[/] {e}", highlight=False, markup=False)
        raise typer.Exit(2)
    typer.echo(key)
