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


def test_timing_and_shared_definitions_come_from_common():
    """No script reads the clock itself (median / p95 with warm-up live in _common), and the CarDD --quick
    subset and targets are defined once."""
    for p in sorted(BENCH.rglob("*.py")):
        if p.name == "_common.py":
            continue
        text = p.read_text()
        assert "perf_counter" not in text, f"{p}: time with _common.timed / timed_each / clock / stopwatch"
        assert 'raw["images"][:' not in text, f"{p}: the --quick subset of a COCO file is _common.quick_coco"
        assert '"segm_AP": 0.35' not in text, f"{p}: issue 15's CarDD targets are _common.CARDD_TARGETS"


def test_common_timing_helpers(tmp_path):
    import sys

    sys.path.insert(0, str(BENCH))
    try:
        import _common
    finally:
        sys.path.remove(str(BENCH))
    calls = []
    out, ts = _common.timed_each(lambda x: calls.append(x) or 2 * x, [1, 2, 3], warmup=1)
    assert out == [2, 4, 6] and len(ts) == 3 and calls == [1, 1, 2, 3]  # item 1 once untimed first
    st = _common.time_stats([3.0, 1.0, 2.0], warmup=1)
    assert (st["median_s"], st["min_s"], st["max_s"], st["p95_s"], st["runs"], st["warmup"]) == (2.0, 1.0, 3.0, 3.0, 3, 1)
    assert _common.clock(sum, [1, 2])[0] == 3 and _common.stopwatch()() >= 0
    coco = tmp_path / "instances_test.json"
    coco.write_text(json.dumps({"images": [{"id": i} for i in range(5)], "categories": [],
                                "annotations": [{"id": i, "image_id": i} for i in range(5)]}))
    q = json.loads(_common.quick_coco(coco, 2, tmp_path / "q.json").read_text())
    assert [im["id"] for im in q["images"]] == [0, 1] and [a["image_id"] for a in q["annotations"]] == [0, 1]
