"""Helpers for running the real engine (real Docker, real git) in tests."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from runner.engine import EngineConfig, RunEngine, StopSignal
from runner.job import RepoRef, Resources, RunEvent, RunFinished, RunRecord, RunRequest
from tests.conftest import unique
from tests.fakegithub.runner import RunningFakeGitHub

_ids = itertools.count(1)
RUNNER_ID = unique("test")


def make_request(repo: Path, prompt: str, pipeline: str = "p1", **overrides: Any) -> RunRequest:
    fields: dict[str, Any] = {
        "run_id": unique(f"{pipeline}-{next(_ids)}"),
        "pipeline": pipeline,
        "repo": RepoRef(full_name="local/sample", clone_url=str(repo)),
        "branch": f"trimo/{pipeline}",
        "base_branch": "main",
        "prompt": prompt,
        "agent": "script",
        "image": "trimo-agent:base",
        "timeout_s": 60,
        "network": "none",
        "resources": Resources(memory="256m", cpus=1.0, pids=128),
    }
    fields.update(overrides)
    return RunRequest(**fields)


class Recorder:
    """Collects the events of a run."""

    def __init__(self) -> None:
        self.events: list[RunEvent] = []

    def __call__(self, event: RunEvent) -> None:
        self.events.append(event)

    def of_type(self, kind: str) -> list[RunEvent]:
        return [e for e in self.events if e.type == kind]

    def text(self) -> str:
        parts = []
        for event in self.events:
            for attr in ("text", "line", "message"):
                value = getattr(event, attr, None)
                if isinstance(value, str):
                    parts.append(value)
        return "\n".join(parts)


def run(
    cache: Path, request: RunRequest, stop: StopSignal | None = None, **config: Any
) -> tuple[RunFinished, Recorder]:
    """`request` run to its end by an engine on `cache` (`config`: more EngineConfig fields)."""
    engine = RunEngine(
        EngineConfig(cache_dir=cache, runner_id=RUNNER_ID, push_interval_seconds=0.5, **config)
    )
    recorder = Recorder()
    finished = engine.execute(request, recorder, stop)
    return finished, recorder


def record_of(request: RunRequest, finished: RunFinished) -> RunRecord:
    return RunRecord(
        run_id=request.run_id,
        prompt=request.prompt,
        agent=request.agent,
        outcome=finished.outcome,
        reason=finished.reason,
        commits=finished.commits,
        diff=finished.diff,
    )


def remote_request(
    gh: RunningFakeGitHub, owner: str, repo: str, prompt: str, number: int, **overrides: Any
) -> RunRequest:
    """A run of pipeline `owner.repo.<issue>` against the stand-in's repository."""
    issue = overrides.pop("issue", 1)
    request = make_request(
        Path("/unused"),
        prompt,
        pipeline=f"{owner}.{repo}.{issue}",
        run_id=f"{owner}.{repo}.{issue}-{number}",
        **overrides,
    )
    clone = RepoRef(full_name=f"{owner}/{repo}", clone_url=gh.clone_url(owner, repo))
    return request.model_copy(update={"repo": clone})


def has_file_named(root: Path, name: str) -> bool:
    """Whether a file called `name` is anywhere under `root`, a tree a live run is changing:
    a directory renamed or removed mid-walk counts as not found yet."""
    try:
        return root.exists() and any(root.rglob(name))
    except FileNotFoundError:
        return False
