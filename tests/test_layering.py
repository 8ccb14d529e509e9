"""Nothing imports upward. The chain, bottom first (a module may import its own layer or a lower one):

    schema <- data <- models <- train / evaluate <- pipeline <- report <- batch / serve <- cli

Checked on every module of every subpackage (``serve/api``, ``serve/db``, ...), on every ``import`` and
``from`` in it, including imports inside functions, with relative imports resolved (``from .. import x``
names the subpackage ``x``). The package's own ``carcheck/__init__.py`` is the public facade
(``carcheck.assess``) and may import anything; importing a name from it (``__version__``) is allowed
everywhere.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "carcheck"

#: layer of each subpackage (equal numbers: the same layer, may import each other)
LAYERS = {"schema": 0, "data": 1, "models": 2, "train": 3, "evaluate": 3, "pipeline": 4, "report": 5,
          "batch": 6, "serve": 6, "cli": 7}

#: Upward imports not yet removed: module (relative to src/carcheck) -> subpackages it may still import.
#: Empty since issue 29 item 2; test_known_upward_still_there keeps the list from going stale.
KNOWN_UPWARD: dict[str, set[str]] = {}


def _module_parts(path: Path) -> tuple[list[str], bool]:
    """(``["carcheck", "serve", "api", "cases"]``, is a package ``__init__``) of a source file."""
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        return parts[:-1], True
    return parts, False


def imported_modules(path: Path) -> list[tuple[list[str], int]]:
    """(dotted carcheck module as a list, line) of every carcheck import in one file, relative
    imports resolved against the file's own package."""
    parts, is_pkg = _module_parts(path)
    package = parts if is_pkg else parts[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                if node.level - 1 > len(package):
                    raise AssertionError(f"{path}:{node.lineno}: relative import above the package")
                base = package[: len(package) - (node.level - 1)]
                mod = base + (node.module.split(".") if node.module else [])
            else:
                mod = (node.module or "").split(".")
            if mod[0] != "carcheck":
                continue
            for a in node.names:  # from .. import x: x may be a module or subpackage
                sub = SRC.parent.joinpath(*mod, a.name)
                out.append((mod + [a.name] if sub.is_dir() or sub.with_suffix(".py").exists() or len(mod) == 1
                            else mod, node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name.split("."), node.lineno) for a in node.names if a.name.split(".")[0] == "carcheck"]
    return out


def upward_imports(path: Path) -> list[str]:
    """Every import of ``path`` that climbs the chain, as ``file:line imports carcheck.x``."""
    parts, _ = _module_parts(path)
    if len(parts) < 2:  # carcheck/__init__.py: the facade
        return []
    own = parts[1]
    rel = str(path.relative_to(SRC))
    allowed = KNOWN_UPWARD.get(rel, set())
    bad = []
    for mod, line in imported_modules(path):
        target = mod[1] if len(mod) > 1 else None
        if target in LAYERS and LAYERS[target] > LAYERS[own] and target not in allowed:
            bad.append(f"{rel}:{line} ({own}) imports {'.'.join(mod)}")
    return bad


def _sources() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_subpackage_has_a_layer():
    packages = {p.relative_to(SRC).parts[0] for p in _sources() if len(p.relative_to(SRC).parts) > 1}
    assert packages <= set(LAYERS), f"no layer for {packages - set(LAYERS)}: add it to LAYERS"
    assert len(_sources()) > 100  # the scan sees the subpackages' modules too


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_no_upward_imports(package):
    files = [p for p in _sources() if p.relative_to(SRC).parts[0] == package]
    assert files, package
    bad = [b for f in files for b in upward_imports(f)]
    assert not bad, bad


def test_known_upward_still_there():
    """An entry of KNOWN_UPWARD that no longer occurs must be removed (the list only shrinks)."""
    for rel, targets in KNOWN_UPWARD.items():
        found = {m[1] for m, _ in imported_modules(SRC / rel) if len(m) > 1}
        assert targets <= found, f"{rel} no longer imports {targets - found}: drop it from KNOWN_UPWARD"


def test_resolves_relative_imports(tmp_path):
    """The scan resolves ``from .. import x``, ``from ...x.y import z`` and absolute imports."""
    pkg = SRC / "serve" / "api"
    probe = pkg / "_layering_probe.py"
    assert not probe.exists()
    code = ("from .. import jobs\nfrom ...cli import main\nfrom ... import __version__\nimport carcheck.batch.run\n"
            "def f():\n    from ...schema import CaseReport\n")
    probe.write_text(code)
    try:
        found = [".".join(m) for m, _ in imported_modules(probe)]
        bad = upward_imports(probe)
    finally:
        probe.unlink()
    assert found == ["carcheck.serve.jobs", "carcheck.cli", "carcheck.__version__", "carcheck.batch.run",
                     "carcheck.schema"], found
    assert bad == ["serve/api/_layering_probe.py:2 (serve) imports carcheck.cli"], bad


def _same_object(module: str, name: str) -> bool:
    """``module.name`` is the schema's object of that name (not a namesake, e.g. the database's ``Finding``)."""
    import importlib

    import carcheck.schema

    try:
        obj = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return True  # gone from there: the import is wrong anyway
    return obj is getattr(carcheck.schema, name)


def _schema_names() -> set[str]:
    import carcheck.schema

    return set(carcheck.schema.__all__)


@pytest.mark.parametrize("where", ["src", "tests"])
def test_schema_names_come_from_schema(where):
    """Configs and report objects are imported from ``carcheck.schema`` only, never through a module that
    happens to import them (``pipeline.assess``, ``pipeline.fusion``, ``report``...)."""
    names = _schema_names()
    bad = []
    for f in sorted((ROOT / where).rglob("*.py")):
        if "__pycache__" in f.parts or f.is_relative_to(SRC / "schema"):
            continue
        in_src = f.is_relative_to(SRC)
        parts, is_pkg = _module_parts(f) if in_src else ([], False)
        package = parts if is_pkg else parts[:-1]
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                mod = package[: len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            else:
                mod = (node.module or "").split(".")
            if mod[0] != "carcheck" or mod[1:2] == ["schema"]:
                continue
            for a in node.names:
                if a.name in names and _same_object(".".join(mod), a.name):
                    bad.append(f"{f.relative_to(ROOT)}:{node.lineno} imports {a.name} from {'.'.join(mod)}")
    assert not bad, bad
