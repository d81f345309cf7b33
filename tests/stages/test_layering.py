"""The rooms of the package import as the architecture page draws them: the library knows no
stage, a stage module imports the library and the stages' support modules but no other stage
(``prepare`` alone runs parse, clean and views in a row), and only the command line sits on
top."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# what the stages share: params and their sections, paths, results and the encoders evaluated
SUPPORT = {"common", "config", "encoders", "params", "paths", "sections"}
COMPOSED = {"prepare": {"parse", "clean", "views"}}  # a stage that is other stages in a row


def imported(path: Path) -> set[str]:
    """Every module a file imports (``from a import b`` gives ``a`` and ``a.b``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def stage_modules() -> dict[str, Path]:
    return {p.stem: p for p in (ROOT / "stages").glob("*.py") if p.stem != "__init__"}


def test_the_library_imports_no_stage():
    for path in (ROOT / "skelctl").rglob("*.py"):
        if path.name in ("cli.py", "__main__.py"):
            continue
        assert not {n for n in imported(path) if n.startswith("skelctl.stages")}, path


def test_a_stage_imports_no_other_stage():
    stages = stage_modules()
    assert SUPPORT < set(stages) and "evaluate" in stages and "downstream" in stages
    for name, path in stages.items():
        used = {n.split(".")[2] for n in imported(path) if n.startswith("skelctl.stages.")}
        others = used - SUPPORT - {name} - COMPOSED.get(name, set())
        assert not others, f"stages/{name}.py imports the stage(s) {sorted(others)}"


def test_the_support_modules_import_no_stage():
    for name in SUPPORT:
        used = {n.split(".")[2] for n in imported(ROOT / "stages" / f"{name}.py")
                if n.startswith("skelctl.stages.")}
        assert used <= SUPPORT, f"stages/{name}.py imports {sorted(used - SUPPORT)}"
