"""Size limits of issue 29: the assessment's orchestrator stays an orchestrator (<= 250 lines) and no module of
the package grows past 450 lines (split it by what it does instead)."""

from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "carcheck"
MAX_LINES = 450


def _lines(p: Path) -> int:
    return len(p.read_text(encoding="utf-8").splitlines())


def test_orchestrator_is_small():
    assert _lines(SRC / "pipeline" / "assess.py") <= 250


def test_no_module_over_the_limit():
    big = {str(p.relative_to(SRC)): _lines(p) for p in SRC.rglob("*.py") if _lines(p) > MAX_LINES}
    assert not big, big
