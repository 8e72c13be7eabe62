"""A pipeline's place on the runner: removed when the App closes it or after it lies unused."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import redis.asyncio as aioredis

from runner import contract
from runner.daemon import RunnerDaemon
from runner.pipelinedir import PipelineDir, remove_when_idle, sweep
from runner.settings import RunnerSettings


def a_pipeline(cache: Path, name: str, age_days: float = 0) -> PipelineDir:
    pipeline = PipelineDir.of(cache, "https://example.com/o/r.git", name)
    pipeline.create()
    (pipeline.path / "root" / "workspace").mkdir(parents=True)
    (pipeline.path / "root" / "workspace" / "f.txt").write_text("x")
    pipeline.remember("a" * 40)
    old = time.time() - age_days * 86400
    os.utime(pipeline.path / "state.json", (old, old))
    return pipeline


def test_sweep_removes_only_pipelines_unused_for_the_ttl(tmp_path: Path) -> None:
    old, fresh = a_pipeline(tmp_path, "old", age_days=20), a_pipeline(tmp_path, "fresh", 1)
    assert sweep(tmp_path, ttl_days=14) == [old.path]
    assert not old.path.exists() and fresh.path.exists()


def test_a_pipeline_in_use_is_left_for_a_later_sweep(tmp_path: Path) -> None:
    busy = a_pipeline(tmp_path, "busy", age_days=20)
    with busy.lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        assert sweep(tmp_path, ttl_days=14) == []
    assert busy.path.exists()
    assert remove_when_idle(busy) and not busy.path.exists()


def test_removal_never_follows_a_link_the_agent_planted(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("host file")
    pipeline = a_pipeline(tmp_path / "cache", "linked", age_days=20)
    (pipeline.path / "root" / "workspace" / "escape").symlink_to(outside)
    assert remove_when_idle(pipeline)
    assert (outside / "keep.txt").read_text() == "host file"


async def test_the_runner_removes_pipelines_the_app_closed(redis_url: str, tmp_path: Path) -> None:
    closed, other = a_pipeline(tmp_path, "o.r.1"), a_pipeline(tmp_path, "o.r.2")
    client = aioredis.Redis.from_url(redis_url)
    await client.xadd(
        contract.CLOSED_PIPELINES,
        {"clone_url": "https://example.com/o/r.git", "pipeline": "o.r.1"},
    )
    await client.xadd(
        contract.CLOSED_PIPELINES, {"clone_url": "https://example.com/o/r.git", "pipeline": ".."}
    )
    daemon = RunnerDaemon(RunnerSettings(redis_url=redis_url, cache_dir=tmp_path))
    try:
        await daemon.remove_closed()
        await daemon.remove_closed()  # the cursor moved on: nothing is read twice
    finally:
        daemon.publisher.close()
        await daemon.redis.aclose()
        await client.aclose()
    assert not closed.path.exists() and other.path.exists()
    assert (tmp_path / "pipelines").exists(), "an unsafe name must never reach the disk"


def test_session_costs_are_noted_per_agent_beside_the_known_commits(tmp_path: Path) -> None:
    """The host's notes keep each agent's session total across `remember`, and read
    anything odd in them as no note."""
    pipeline = a_pipeline(tmp_path, "p")
    assert pipeline.session_cost("claude") == 0.0
    pipeline.note_session_cost("claude", 0.0097)
    pipeline.remember("b" * 40)
    assert pipeline.session_cost("claude") == 0.0097 and pipeline.session_cost("codex") == 0.0
    assert pipeline.known() == ["b" * 40, "a" * 40]
    for odd in ('{"sessions": {"claude": "1"}}', '{"sessions": {"claude": -1}}',
                '{"sessions": {"claude": NaN}}', '{"sessions": [1]}', "[]", "{"):  # fmt: skip
        (pipeline.path / "state.json").write_text(odd)
        assert pipeline.session_cost("claude") == 0.0
    pipeline.forget_workspace()
    assert pipeline.session_cost("claude") == 0.0
