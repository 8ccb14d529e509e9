"""``carcheck users create``: reviewer accounts of the review UI (issue 18)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from ._common import console

app = typer.Typer(help="Reviewer accounts of the carcheck review UI.", no_args_is_help=True)


@app.command("create")
def create(
    tenant: str = typer.Option(..., "--tenant", help="Tenant name (created if new): the reviewer sees its cases only."),
    email: str = typer.Option(..., "--email", help="Login e-mail (unique)."),
    role: str = typer.Option("reviewer", "--role", help="reviewer or admin."),
    data_dir: Path = typer.Option(Path("carcheck-data"), "--data-dir", help="The service's data dir."),
    database_url: Optional[str] = typer.Option(None, "--database-url", envvar="CARCHECK_DATABASE_URL",
                                               help="The service's database (default: SQLite in the data dir)."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from the first line "
                                        "of stdin (otherwise: prompted twice, not echoed)."),
) -> None:
    """Create a reviewer account (password stored as an argon2id hash). Exit code 2 for a bad role,
    e-mail or password (at least 10 characters), or an e-mail that already has an account."""
    if role not in ("reviewer", "admin"):
        raise typer.BadParameter(f"{role!r}: must be reviewer or admin", param_hint="--role")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    from ..serve.db.session import make_engine, session_factory, sqlite_url, upgrade
    from ..serve.review.accounts import create_user

    try:
        if database_url is None:
            data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(database_url or sqlite_url(data_dir))
        upgrade(engine)
        with session_factory(engine)() as s:
            user = create_user(s, tenant, email, role, password)
            s.commit()
            uid, mail = user.id, user.email
    except (ValueError, OSError) as e:
        console.print(f"[red]error:[/] {e}", highlight=False, markup=False)
        raise typer.Exit(2)
    typer.echo(f"created {role} {mail} (user:{uid}) of tenant {tenant}")
