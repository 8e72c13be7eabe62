"""Picking, against the App's own services (real Redis, the stand-in's real repository):
two people picking at once take turns, and a pick's GitHub refusals are told, not raised."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from pathlib import Path

import pytest

from app.runs import attempts
from app.runs.pipelines import Pipeline
from runner.job import CommitInfo, Outcome, RunFinished
from tests.fakegithub import gitserver
from tests.test_ended import OWNER, REPO, World, fake, run_of, started, world

__all__ = ["fake", "world"]  # the fixtures, for pytest

pytestmark = pytest.mark.redis


def push_attempt(world: World, tmp: Path, branch: str, text: str) -> str:
    """A commit on `branch` (from main), pushed into the stand-in's repository: its sha."""
    bare = str(world.gh.fake.bare_path(OWNER, REPO))
    work = tmp / branch.replace("/", "_")
    subprocess.run(["git", "clone", "-q", bare, str(work)], check=True)
    (work / "answer.txt").write_text(text)
    ident = ["-c", "user.name=Agent", "-c", "user.email=agent@example.com"]
    for args in (
        ["checkout", "-q", "-b", branch],
        ["add", "-A"],
        [*ident, "commit", "-qm", text],
        ["push", "-q", "origin", branch],
    ):
        subprocess.run(["git", "-C", str(work), *args], check=True)
    return subprocess.run(
        ["git", "-C", str(work), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()


async def two_ended_attempts(world: World, tmp: Path) -> Pipeline:
    delivery = str(uuid.uuid4())
    await world.deliver("issue_comment", world.comment("/trimo run --attempts 2 x"), delivery)
    base = run_of(world.number, delivery)
    pipeline, _ = await world.run(f"{base}.1")
    for k in (1, 2):
        run_id = f"{base}.{k}"
        _, run = await world.run(run_id)
        assert run.branch is not None
        sha = push_attempt(world, tmp, run.branch, f"answer {k}\n")
        await world.publish(
            run_id,
            started(run_id),
            RunFinished(
                run_id=run_id, outcome=Outcome.SUCCESS, head_sha=sha,
                commits=[CommitInfo(sha=sha, subject=f"answer {k}")],
            ),
        )  # fmt: skip
    await world.settle()
    found = await world.services.pipelines.get(pipeline.id)
    assert found is not None and all(r.status == "finished" for r in found.runs)
    return found


async def test_two_picks_at_once_take_turns(world: World, tmp_path: Path) -> None:
    pipeline = await two_ended_attempts(world, tmp_path)
    services = world.services
    api = await services.github.repo(world.installation_id, f"{OWNER}/{REPO}")
    first, second = await asyncio.gather(
        attempts.pick(services, api, pipeline.id, 1, "mona"),
        attempts.pick(services, api, pipeline.id, 2, "hubot"),
    )
    assert sorted([first.how, second.how]) == ["picked", "switched"], (first, second)
    kept = await services.pipelines.get(pipeline.id)
    assert kept is not None and kept.attempt_sets[0].picked in (1, 2)
    picked = kept.attempt_numbered(kept.attempt_sets[0].picked or 0)
    assert picked is not None
    assert world.gh.fake.branch_sha(OWNER, REPO, pipeline.branch) == picked[1].head_sha


async def test_a_protected_pipeline_branch_is_a_told_refusal(world: World, tmp_path: Path) -> None:
    pipeline = await two_ended_attempts(world, tmp_path)
    bare = world.gh.fake.bare_path(OWNER, REPO)
    gitserver.install_protection(bare, ["main", pipeline.branch])
    services = world.services
    api = await services.github.repo(world.installation_id, f"{OWNER}/{REPO}")
    refused = await attempts.pick(services, api, pipeline.id, 1, "mona")
    assert refused.how == "refused" and "Protected branch" in refused.message
    after = await services.pipelines.get(pipeline.id)
    assert after is not None and after.attempt_sets[0].picked is None
