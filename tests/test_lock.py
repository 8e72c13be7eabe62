"""requirements.lock and requirements-dev.lock pin every dependency of pyproject.toml with
its hashes, and are what scripts/setup.sh and deploy/Dockerfile install (scripts/lock
writes them)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def name(requirement: str) -> str:
    """A requirement's normalised project name (PEP 503)."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def pinned(lock: str) -> dict[str, str]:
    """Each package of a lock file and the text of its entry."""
    entries: dict[str, str] = {}
    for entry in re.split(r"\n(?=\S)", (ROOT / lock).read_text().strip()):
        head = entry.split(" ", 1)[0]
        if head == "#":  # pip-compile's note before setuptools (pinned too, --allow-unsafe)
            continue
        assert re.fullmatch(r"[A-Za-z0-9][\w.\-]*(\[[\w,.\-]+\])?==[\w.+!\-]+", head), head
        entries[name(head)] = entry
    return entries


@pytest.mark.parametrize(
    ("lock", "extras"), [("requirements.lock", []), ("requirements-dev.lock", ["dev"])]
)
def test_the_lock_pins_every_dependency_with_hashes(lock: str, extras: list[str]) -> None:
    entries = pinned(lock)
    wanted = [
        *PROJECT["dependencies"],
        *(r for e in extras for r in PROJECT["optional-dependencies"][e]),
    ]
    missing = sorted({name(r) for r in wanted} - set(entries))
    assert not missing, f"{missing} not in {lock}: run scripts/lock"
    for package, entry in entries.items():
        assert "--hash=sha256:" in entry, package


def test_installs_come_from_the_lock() -> None:
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert "pip install -q --require-hashes -r requirements-dev.lock" in setup
    assert "pip install -q --no-deps -e . --no-build-isolation" in setup  # the locked setuptools
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "--require-hashes -r requirements.lock" in dockerfile
    assert "--no-deps -e ." in dockerfile
