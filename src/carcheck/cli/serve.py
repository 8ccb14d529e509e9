"""``carcheck serve``: the HTTP service (FastAPI + uvicorn, a database, assessment workers)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ._common import console


def serve_command(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="TCP port."),
    data_dir: Path = typer.Option(Path("carcheck-data"), "--data-dir",
                                  help="Folder of the SQLite database (default database), photos and reports."),
    database_url: Optional[str] = typer.Option(None, "--database-url", envvar="CARCHECK_DATABASE_URL",
                                               help="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db "
                                                    "(default: SQLite in WAL mode at DATA_DIR/carcheck.db)."),
    workers: int = typer.Option(1, min=0, help="Assessment worker processes (each loads the models once)."),
    threads_per_worker: Optional[int] = typer.Option(None, min=1, help="Threads per worker (default: cores // workers)."),
    max_file_mb: float = typer.Option(25.0, help="Largest photo accepted, MiB."),
    max_case_mb: float = typer.Option(200.0, help="Largest total of a case's photos, MiB."),
    max_photos: int = typer.Option(50, min=1, help="Photos per case."),
    max_rejected: int = typer.Option(50, min=0, help="Rejected uploads recorded per case (later ones are answered "
                                     "but not recorded)."),
    rate_limit: float = typer.Option(50.0, help="Requests per second per API key (burst: --rate-burst)."),
    rate_burst: int = typer.Option(100, min=1, help="Requests a key may send at once."),
    lease_seconds: float = typer.Option(60.0, help="Job lease: a job whose worker died is picked up again after this."),
    no_gradcam: bool = typer.Option(False, "--no-gradcam", help="No Grad-CAM maps in report.html."),
    allow_callback_host: List[str] = typer.Option([], "--allow-callback-host", metavar="HOST",
                                                  help="Accept callbacks to HOST (a name or an address) even when it "
                                                       "resolves to a loopback / private / link-local address, e.g. a "
                                                       "receiver on this machine. Repeatable."),
    callback_timeout: float = typer.Option(10.0, min=0.1, help="Seconds each phase of a callback delivery may take "
                                           "(connect at most 5 s, send, wait for the answer)."),
    docs: bool = typer.Option(False, "--docs", help="Serve Swagger UI at /docs (it loads from a CDN; "
                              "/openapi.json is always served)."),
) -> None:
    """Serve the carcheck API (/v1, OpenAPI at /openapi.json) until Ctrl-C. Create a key first:
    `carcheck keys create --tenant NAME --data-dir DIR`. Pass a database password through
    CARCHECK_DATABASE_URL rather than --database-url (argv is visible to every local user)."""
    from ..serve.app import run_server
    from ..serve.settings import MB, Settings

    try:
        settings = Settings(host=host, port=port, data_dir=data_dir, database_url=database_url, workers=workers,
                            threads_per_worker=threads_per_worker, max_file_bytes=int(max_file_mb * MB),
                            max_case_bytes=int(max_case_mb * MB), max_photos_per_case=max_photos,
                            max_request_bytes=int(max_case_mb * MB) + 10 * MB, rate_limit=rate_limit,
                            rate_burst=rate_burst, lease_seconds=lease_seconds, gradcam=not no_gradcam,
                            max_rejected_per_case=max_rejected, allowed_callback_hosts=frozenset(allow_callback_host),
                            callback_timeout_seconds=callback_timeout, docs=docs)
        from ..serve.db.session import make_engine

        make_engine(settings.url).dispose()  # an unsupported URL is a usage error, before anything starts
    except ValueError as e:
        console.print(f"[red]error:[/] {e}", highlight=False, markup=False)
        raise typer.Exit(2)
    console.print(f"carcheck serving on http://{host}:{port} ({'docs: /docs' if docs else 'OpenAPI: /openapi.json'}), "
                  f"{workers} worker(s), database {settings.url.split('@')[-1]}", highlight=False, markup=False)
    run_server(settings)
