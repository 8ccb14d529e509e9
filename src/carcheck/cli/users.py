"""``carcheck users create / list / disable``: reviewer accounts of the review UI (issues 18, 28)."""

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
    from ..serve.db.session import open_database
    from ..serve.review.accounts import create_user

    try:
        with open_database(data_dir, database_url)() as s:
            user = create_user(s, tenant, email, role, password)
            s.commit()
            uid, mail = user.id, user.email
    except (ValueError, OSError) as e:
        console.print(f"[red]error:[/] {e}", highlight=False, markup=False)
        raise typer.Exit(2)
    typer.echo(f"created {role} {mail} (user:{uid}) of tenant {tenant}")


@app.command("list")
def list_(
    tenant: Optional[str] = typer.Option(None, "--tenant", help="Only this tenant's accounts."),
    data_dir: Path = typer.Option(Path("carcheck-data"), "--data-dir", help="The service's data dir."),
    database_url: Optional[str] = typer.Option(None, "--database-url", envvar="CARCHECK_DATABASE_URL",
                                               help="The service's database (default: SQLite in the data dir)."),
) -> None:
    """List reviewer accounts: e-mail, tenant, role, created, disabled (UTC)."""
    from ..serve.db.session import open_database
    from ..serve.review.accounts import list_users

    try:
        with open_database(data_dir, database_url)() as s:
            rows = [(u.email, t, u.role, u.created_at, u.disabled_at) for u, t in list_users(s, tenant)]
    except (ValueError, OSError) as e:
        console.print(f"[red]error:[/] {e}", highlight=False, markup=False)
        raise typer.Exit(2)
    typer.echo("email\ttenant\trole\tcreated\tdisabled")
    for email, t, role, created, disabled in rows:
        typer.echo(f"{email}\t{t}\t{role}\t{created:%Y-%m-%d %H:%M}\t"
                   f"{disabled.strftime('%Y-%m-%d %H:%M') if disabled else '-'}")


@app.command("disable")
def disable(
    email: str = typer.Argument(..., help="The account's login e-mail."),
    tenant: str = typer.Option(..., "--tenant", help="The account's tenant."),
    data_dir: Path = typer.Option(Path("carcheck-data"), "--data-dir", help="The service's data dir."),
    database_url: Optional[str] = typer.Option(None, "--database-url", envvar="CARCHECK_DATABASE_URL",
                                               help="The service's database (default: SQLite in the data dir)."),
) -> None:
    """Disable a reviewer: no more logins, and every open session ends (its next request goes to /login).
    Exit code 2 when TENANT has no such account."""
    from ..serve.db.session import open_database
    from ..serve.review.accounts import disable_user

    try:
        with open_database(data_dir, database_url)() as s:
            user, ended = disable_user(s, email, tenant)
            s.commit()
            mail = user.email
    except (ValueError, OSError) as e:
        console.print(f"[red]error:[/] {e}", highlight=False, markup=False)
        raise typer.Exit(2)
    typer.echo(f"disabled {mail} of tenant {tenant}; {ended} session(s) ended")
