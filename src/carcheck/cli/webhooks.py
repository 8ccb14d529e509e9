"""``carcheck webhooks secret``: the secret that signs a tenant's completion callbacks (issue 28)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._common import console

app = typer.Typer(help="Signed completion callbacks of the carcheck service.", no_args_is_help=True)


@app.command("secret")
def secret(
    tenant: str = typer.Option(..., "--tenant", help="The tenant whose callbacks the secret signs."),
    rotate: bool = typer.Option(False, "--rotate", help="Replace the secret with a new one (callbacks from then "
                                "on are signed with the new one only)."),
    data_dir: Path = typer.Option(Path("carcheck-data"), "--data-dir", help="The service's data dir."),
    database_url: Optional[str] = typer.Option(None, "--database-url", envvar="CARCHECK_DATABASE_URL",
                                               help="The service's database (default: SQLite in the data dir)."),
) -> None:
    """Print TENANT's signing secret (whsec_...; created on first use). Receivers check
    X-Carcheck-Signature with it (docs/service-security.md). Exit code 2 for an unknown tenant."""
    from sqlalchemy import select

    from ..serve.callbacks import tenant_secret
    from ..serve.db.models import Tenant
    from ..serve.db.session import open_database

    try:
        with open_database(data_dir, database_url)() as s:
            row = s.scalar(select(Tenant).where(Tenant.name == tenant.strip()))
            if row is None:
                raise ValueError(f"no tenant {tenant!r} (carcheck keys create --tenant makes one)")
            value = tenant_secret(s, row, rotate=rotate)
            s.commit()
    except (ValueError, OSError) as e:
        console.print(f"[red]error:[/] {e}", highlight=False, markup=False)
        raise typer.Exit(2)
    typer.echo(value)
