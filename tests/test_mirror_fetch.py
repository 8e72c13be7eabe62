"""Runs of one repository starting together share the mirror's fetch, never a stale one.

Each run brings the repository's mirror up to date under the mirror's lock: eight attempts
of one prompt queued for eight fetches, one after another (against GitHub, a round trip
each). A run waiting for the lock now takes the mirror as a fetch that began after the run
asked for it left it; a fetch that began earlier may lack what was pushed since, so the run
fetches again.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runner import gitops
from tests.conftest import git

CALLS = 3


@pytest.fixture
def origin(sample_repo: Path, tmp_path: Path) -> Path:
    bare = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(sample_repo), str(bare))
    return bare


@pytest.fixture
def fetches(monkeypatch: pytest.MonkeyPatch) -> list[Path | None]:
    """The real git, with each fetch it makes noted."""
    noted: list[Path | None] = []
    real: Callable[..., Any] = gitops.git

    def noting(repo: Path | None, *args: str, **kwargs: Any) -> Any:
        if "fetch" in args:
            noted.append(repo)
        return real(repo, *args, **kwargs)

    monkeypatch.setattr(gitops, "git", noting)
    return noted


def waiting_for(lock: Path) -> int:
    """How many flocks wait for `lock` (/proc/locks marks a waiter `->`)."""
    inode = f":{os.stat(lock).st_ino} "
    return sum(
        "->" in line and inode in line for line in Path("/proc/locks").read_text().splitlines()
    )


def commit(origin: Path, tmp_path: Path, name: str) -> str:
    work = tmp_path / f"work-{name}"
    git(tmp_path, "clone", "-q", str(origin), str(work))
    (work / name).write_text(name)
    git(work, "add", name)
    git(work, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", name)
    git(work, "push", "-q", "origin", "HEAD:main")
    return git(work, "rev-parse", "HEAD")


def test_runs_waiting_together_share_one_fetch(
    origin: Path, tmp_path: Path, fetches: list[Path | None]
) -> None:
    mirrors_dir = tmp_path / "mirrors"
    mirror = gitops.ensure_mirror(mirrors_dir, str(origin))
    pushed = commit(origin, tmp_path, "late")
    fetches.clear()
    lock = mirrors_dir / f"{gitops.repo_key(str(origin))}.lock"
    found: list[Path] = []

    with gitops.locked(lock):  # a gc, or a fetch for an earlier run, holds the mirror
        callers = [
            threading.Thread(
                target=lambda: found.append(gitops.ensure_mirror(mirrors_dir, str(origin)))
            )
            for _ in range(CALLS)
        ]
        for caller in callers:
            caller.start()
        deadline = time.monotonic() + 60
        while waiting_for(lock) < CALLS:
            assert time.monotonic() < deadline, "the runs never waited for the mirror"
            time.sleep(0.01)
    for caller in callers:
        caller.join(60)

    assert found == [mirror] * CALLS
    assert fetches == [mirror]
    assert gitops.branch_sha(mirror, "main") == pushed


def test_a_fetch_that_began_before_the_run_asked_is_not_enough(
    origin: Path, tmp_path: Path, fetches: list[Path | None]
) -> None:
    mirrors_dir = tmp_path / "mirrors"
    mirror = gitops.ensure_mirror(mirrors_dir, str(origin))
    for name in ("one", "two"):
        pushed = commit(origin, tmp_path, name)

        assert gitops.ensure_mirror(mirrors_dir, str(origin)) == mirror
        assert gitops.branch_sha(mirror, "main") == pushed
    assert len(fetches) == 3
