"""The boundaries of ../shared/DESIGN.md, as imports: `runner/` imports nothing from `app/`
and never talks to GitHub's API (no githubkit); neither imports the tests or the benches.
Read from the source, so a new module cannot cross one unseen."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"runner": {"app", "githubkit", "tests", "bench"}, "app": {"tests", "bench"}}


def imported(path: Path) -> set[str]:
    """The top-level package of every module `path` imports, wherever in the file."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_a_part_imports_nothing_it_must_not(part: str) -> None:
    modules = sorted((ROOT / part).rglob("*.py"))
    assert len(modules) > 20, f"{part}/ has too few modules to be this checkout"
    crossings = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in modules
        for name in sorted(imported(path) & FORBIDDEN[part])
    ]
    assert not crossings, "\n".join(crossings)
