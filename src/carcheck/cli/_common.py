"""Shared CLI helpers: console, progress bars, JSON output."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.progress import track as rich_track

console = Console(stderr=True)


def track(iterable, description: str = "working", **_: Any):
    """rich progress bar on stderr (so ``--json`` stdout stays clean)."""
    return rich_track(iterable, description=description, console=console, transient=True)


def emit_json(obj: Any) -> None:
    """Print ``obj`` as JSON on stdout."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
