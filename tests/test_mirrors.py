"""The mirror cache's upkeep: which mirrors are gc-ed when (pure), a real `git gc` under the
mirror's lock, and the cache's size on the App's `/metrics`."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from arq import create_pool
from arq.connections import ArqRedis

from runner import figures, gitops, mirrors
from runner.mirrors import Mirror
from runner.redisurl import redis_settings
from tests import webhook_helpers
from tests.conftest import git
from tests.metrics_helpers import scrape
from tests.webhook_helpers import RunningApp

webhook_app = webhook_helpers.webhook_app

DAY = 24 * 3600.0
NOW = 100 * DAY


def mirror(key: str, changed_at: float, gc_at: float | None) -> Mirror:
    return Mirror(Path(f"/cache/mirrors/{key}.git"), changed_at, gc_at)


@pytest.mark.parametrize(
    ("changed_at", "gc_at", "is_due"),
    [
        (NOW - 10, None, True),  # never gc-ed
        (NOW - 10, NOW - DAY - 1, True),  # changed since a gc a day ago
        (NOW - 10, NOW - DAY + 60, False),  # changed, but gc-ed within the day
        (NOW - 2 * DAY, NOW - 2 * DAY + 1, False),  # gc-ed long ago, unchanged since
        (NOW - DAY, NOW - DAY, False),  # the gc was the last change
    ],
)
def test_a_mirror_is_due_when_never_gc_ed_or_changed_since_a_gc_a_day_ago(
    changed_at: float, gc_at: float | None, is_due: bool
) -> None:
    assert bool(mirrors.due([mirror("a", changed_at, gc_at)], NOW)) is is_due


def test_the_longest_waiting_mirror_goes_first() -> None:
    found = [
        mirror("recent", NOW, NOW - 2 * DAY),
        mirror("never-b", NOW, None),
        mirror("old", NOW, NOW - 9 * DAY),
        mirror("never-a", NOW, None),
        mirror("fresh", NOW, NOW - 60),
    ]
    assert [m.key for m in mirrors.due(found, NOW)] == ["never-a", "never-b", "old", "recent"]


def test_a_mirror_shares_its_lock_with_the_fetch_into_it() -> None:
    found = mirror(gitops.repo_key("https://example.com/o/r.git"), NOW, None)
    assert found.lock == Path("/cache/mirrors") / f"{found.key}.lock"
    assert found.stamp == Path("/cache/mirrors") / f"{found.key}.gc"


def grown_mirror(tmp_path: Path, sample_repo: Path, fetches: int = 6) -> Path:
    """A real mirror that took several fetches: a pack or loose objects from each."""
    mirrors_dir = tmp_path / "mirrors"
    url = str(sample_repo)
    path = gitops.ensure_mirror(mirrors_dir, url)
    for n in range(fetches):
        (sample_repo / f"file-{n}.txt").write_text(f"{n}\n" * 2000)
        git(sample_repo, "add", "-A")
        git(sample_repo, "commit", "-q", "-m", f"change {n}")
        gitops.ensure_mirror(mirrors_dir, url)
    return path


def objects_of(path: Path) -> dict[str, int]:
    lines = git(path, "count-objects", "-v").splitlines()
    return {k: int(v) for k, v in (line.split(": ") for line in lines) if v.isdigit()}


def test_a_real_mirror_is_gc_ed_once_and_measured(tmp_path: Path, sample_repo: Path) -> None:
    path = grown_mirror(tmp_path, sample_repo)
    before = objects_of(path)
    assert before["count"] + before["packs"] > 1, before

    first = mirrors.tend(tmp_path / "mirrors", time.time())
    after = objects_of(path)
    again = mirrors.tend(tmp_path / "mirrors", time.time())

    assert (first.mirrors, first.collected, first.failed, first.busy) == (1, 1, 0, 0)
    assert (after["count"], after["packs"]) == (0, 1), after
    assert first.bytes == mirrors.size(path) > 0
    assert git(path, "rev-parse", "main") == git(sample_repo, "rev-parse", "main")
    assert again.collected == 0, "an unchanged mirror was gc-ed again"


def test_a_mirror_a_fetch_holds_is_left_for_the_next_look(
    tmp_path: Path, sample_repo: Path
) -> None:
    path = grown_mirror(tmp_path, sample_repo, fetches=2)
    [found] = mirrors.survey(tmp_path / "mirrors")
    with gitops.locked(found.lock):  # what ensure_mirror holds while it fetches
        busy = mirrors.tend(tmp_path / "mirrors", time.time())
    later = mirrors.tend(tmp_path / "mirrors", time.time())

    assert (busy.collected, busy.busy) == (0, 1)
    assert (later.collected, later.busy) == (1, 0)
    assert objects_of(path)["packs"] == 1


@pytest.fixture
async def pool(redis_url: str) -> AsyncIterator[ArqRedis]:
    pool = await create_pool(redis_settings(redis_url))
    yield pool
    await pool.aclose()


@pytest.mark.redis
async def test_the_mirror_cache_size_and_gcs_are_on_metrics(
    tmp_path: Path, sample_repo: Path, pool: ArqRedis, webhook_app: RunningApp
) -> None:
    grown_mirror(tmp_path, sample_repo, fetches=2)
    upkeep = mirrors.tend(tmp_path / "mirrors", time.time())
    await figures.observe_mirrors(
        pool, "box-1", mirrors=upkeep.mirrors, size=upkeep.bytes,
        collected=upkeep.collected, failed=upkeep.failed,
    )  # fmt: skip
    await figures.observe_run(pool, "box-2", outcome="success", duration=1.0, time_to_agent=0.5)

    got = scrape(webhook_app.client)

    assert got.value("trimo_runner_mirror_bytes", runner="box-1") == upkeep.bytes > 0
    assert got.value("trimo_runner_mirrors", runner="box-1") == 1
    assert got.value("trimo_runner_mirror_gcs_total", runner="box-1", result="collected") == 1
    assert got.value("trimo_runner_mirror_gcs_total", runner="box-1", result="failed") == 0
    assert not got.has("trimo_runner_mirror_bytes", runner="box-2")  # it has not looked yet
