"""``carcheck keys create / list / revoke``: API keys of the service's tenants."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._common import console

app = typer.Typer(help="API keys of the carcheck service.", no_args_is_help=True)

DATA_DIR = typer.Option(Path("carcheck-data"), "--data-dir", help="The service's data dir.")
DATABASE_URL = typer.Option(None, "--database-url", envvar="CARCHECK_DATABASE_URL",
                            help="The service's database (default: SQLite in the data dir). Prefer the "
                                 "environment variable: a password in argv is visible to every local user.")


def _fail(e: Exception) -> None:
    console.print(f"[red]error:[/] {e}", highlight=False, markup=False)
    raise typer.Exit(2)


@app.command("create")
def create(
    tenant: str = typer.Option(..., "--tenant", help="Tenant name (created if new)."),
    data_dir: Path = DATA_DIR,
    database_url: Optional[str] = DATABASE_URL,
    name: Optional[str] = typer.Option(None, help="A label for the key."),
) -> None:
    """Create an API key for TENANT and print it (only once: the database keeps its SHA-256)."""
    from ..serve.auth import create_key
    from ..serve.db.session import open_database

    try:
        with open_database(data_dir, database_url)() as s:
            key = create_key(s, tenant, name)
            s.commit()
    except (ValueError, OSError) as e:
        _fail(e)
    typer.echo(key)


@app.command("list")
def list_(
    tenant: Optional[str] = typer.Option(None, "--tenant", help="Only this tenant's keys."),
    data_dir: Path = DATA_DIR,
    database_url: Optional[str] = DATABASE_URL,
) -> None:
    """List keys: prefix (the <prefix> of cck_<prefix>_...), tenant, label, created, revoked (UTC). No secret
    is shown (the database has none)."""
    from ..serve.auth import list_keys
    from ..serve.db.session import open_database

    try:
        with open_database(data_dir, database_url)() as s:
            rows = [(k.prefix, t, k.name or "", k.created_at, k.revoked_at) for k, t in list_keys(s, tenant)]
    except (ValueError, OSError) as e:
        _fail(e)
    typer.echo("prefix\ttenant\tname\tcreated\trevoked")
    for prefix, t, label, created, revoked in rows:
        typer.echo(f"{prefix}\t{t}\t{label}\t{created:%Y-%m-%d %H:%M}\t"
                   f"{revoked.strftime('%Y-%m-%d %H:%M') if revoked else '-'}")


@app.command("revoke")
def revoke(
    prefix: str = typer.Argument(..., help="The key's prefix: the 12 hex digits after cck_ (see keys list)."),
    data_dir: Path = DATA_DIR,
    database_url: Optional[str] = DATABASE_URL,
) -> None:
    """Revoke a key: every request with it answers 401 from now on (a running server too). Exit code 2
    for an unknown prefix."""
    from ..serve.auth import revoke_key
    from ..serve.db.session import open_database

    try:
        with open_database(data_dir, database_url)() as s:
            key, now = revoke_key(s, prefix)
            s.commit()
            shown = key.prefix
    except (ValueError, OSError) as e:
        _fail(e)
    typer.echo(f"revoked key {shown}" if now else f"key {shown} was already revoked")
