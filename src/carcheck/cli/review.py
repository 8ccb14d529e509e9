"""``carcheck review stats``: what reviewers decided, per damage type and model version, and the
review threshold it suggests (issue 18)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ._common import console, emit_json, esc

app = typer.Typer(help="Human review of the carcheck service's cases.", no_args_is_help=True)


@app.command("stats")
def stats(
    data_dir: Path = typer.Option(Path("carcheck-data"), "--data-dir", help="The service's data dir."),
    database_url: Optional[str] = typer.Option(None, "--database-url", envvar="CARCHECK_DATABASE_URL",
                                               help="The service's database (default: SQLite in the data dir)."),
    tenant: Optional[str] = typer.Option(None, "--tenant", help="Only this tenant's cases (default: all)."),
    target: float = typer.Option(0.9, "--target-precision", min=0.01, max=1.0,
                                 help="Precision the findings that skip review should reach."),
    min_support: int = typer.Option(20, "--min-support", min=1, help="Fewest findings above a threshold."),
    json_out: bool = typer.Option(False, "--json", help="Print the statistics as JSON on stdout."),
) -> None:
    """Confirmed / corrected / rejected shares and precision as reviewers saw it, per damage type and
    per model version, and per model version the lowest C_refined threshold reaching the target."""
    from ..serve.review.stats import review_stats
    from ._common import open_service_db

    factory, tid = open_service_db(data_dir, database_url, tenant)
    with factory() as s:
        st = review_stats(s, tid, target, min_support)
    if json_out:
        emit_json(st.model_dump(mode="json"))
        return
    for title, groups in (("damage type", st.by_damage), ("model version", st.by_model_version)):
        t = Table(title=f"Reviewed findings by {title} ({st.reviewed_cases} reviewed case(s))")
        for col in (title, "decided", "confirmed", "corrected", "rejected", "accepted", "precision",
                    "precision (any type)"):
            t.add_column(col)
        fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        for k, g in groups.items():
            t.add_row(esc(k), str(g.decided), fmt(g.confirmed_share), fmt(g.corrected_share), fmt(g.rejected_share),
                      str(g.accepted), fmt(g.precision), fmt(g.precision_damage))
        console.print(t)
    for sug in st.suggestions:
        if sug.threshold is None:
            console.print(f"{esc(sug.model_version or '?')}: no threshold suggested ({esc(sug.reason or '')})")
        else:
            console.print(f"{esc(sug.model_version or '?')}: review below C_refined {sug.threshold:.3f} "
                          f"(precision {sug.precision:.3f} on {sug.support} findings above it, target "
                          f"{sug.target_precision:g}; {100 * sug.review_share:.0f}% would go to review)")
