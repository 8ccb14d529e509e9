"""bench/ is a harness (issue 29): scripts grouped by purpose, one module for paths / timing / the results
header, and every results JSON states the machine, date, commit and command it came from."""

import json
import re
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
GROUPS = ("accuracy", "speed", "studies", "calibration", "cards")


@pytest.mark.parametrize("path", sorted((BENCH / "results").glob("*.json")), ids=lambda p: p.name)
def test_results_json_carries_the_header(path):
    h = json.loads(path.read_text())["header"]
    assert h["machine"] and h["date"] and h["command"], h
    assert re.fullmatch(r"[0-9a-f]{40}", h["git_commit"] or ""), h


def test_scripts_are_grouped_and_use_common():
    top = sorted(p.name for p in BENCH.glob("*.py"))
    assert top == ["_common.py", "cases.py"], top  # cases.py: issue 26's case bench, at the top for now
    scripts = [p for g in GROUPS for p in (BENCH / g).glob("*.py")]
    assert len(scripts) >= 30
    for p in scripts:
        if p.name == "generate.py":  # cards/generate.py only runs the card writers
            continue
        text = p.read_text()
        assert "from _common import" in text, f"{p}: use bench/_common.py (paths, timing, write_results)"
        assert '"shared" / "data"' not in text, f"{p}: the data path comes from _common.DATA (CARCHECK_DATA)"
        assert "_timing" not in text, p


def test_common_header_and_timing():
    import sys

    sys.path.insert(0, str(BENCH))
    try:
        import _common
    finally:
        sys.path.remove(str(BENCH))
    t = _common.timed(lambda: None, runs=5, warmup=1)
    assert t["min_s"] <= t["median_s"] <= t["p95_s"] and t["runs"] == 5
    h = _common.results_header("python bench/x.py")
    assert {"machine", "date", "git_commit", "git_dirty", "command"} <= set(h) and h["command"] == "python bench/x.py"
    assert h["machine"]["cores"] >= 1
