"""Nothing imports upward: data -> models -> train / evaluate -> pipeline -> batch / cli. The report
package draws and writes (schema, privacy, HTML) and never reaches into the models or the pipeline.
Checked on every ``import`` and ``from`` in the source, including imports inside functions."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "carcheck"

#: package -> carcheck packages it must NOT import
FORBIDDEN = {
    "data": {"models", "train", "evaluate", "pipeline", "report", "batch", "cli"},
    "models": {"train", "evaluate", "pipeline", "report", "batch", "cli"},
    "train": {"pipeline", "report", "batch", "cli"},
    "evaluate": {"train", "batch", "cli"},
    "report": {"models", "train", "evaluate", "pipeline", "batch", "cli"},
    "pipeline": {"train", "evaluate", "batch", "cli"},
    "batch": {"cli"},
    "serve": {"batch", "cli"},
}


def _imported_packages(path: Path, package: str) -> set[tuple[str, int]]:
    """(carcheck sub-package, line) of every import in one module."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0 and (node.module or "").startswith("carcheck."):
                out.add((node.module.split(".")[1], node.lineno))
            elif node.level == 2 and node.module:  # from ..x import y, inside carcheck/<package>/
                out.add((node.module.split(".")[0], node.lineno))
            elif node.level == 1:
                out.add((package, node.lineno))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("carcheck."):
                    out.add((a.name.split(".")[1], node.lineno))
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_upward_imports(package):
    bad = [f"{f.relative_to(SRC)}:{line} imports carcheck.{p}"
           for f in sorted((SRC / package).glob("*.py")) for p, line in _imported_packages(f, package)
           if p in FORBIDDEN[package]]
    assert not bad, bad
