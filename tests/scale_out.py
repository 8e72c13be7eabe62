"""A fleet on one Redis: runner processes standing in for machines, App workers, and many
runs across many repositories. Drives tests/test_scale_out.py and bench/scale_out.py.

Every part is a real process: `trimo serve` (the webhook edge and an App worker), more
`trimo worker`s, and `trimo runner`s each with its own cache directory and labels, against
the GitHub stand-in and its git server, real Docker and the `script` agent.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import docker
import httpx
import redis

from app.runs.pipelines import PIPELINE_IDS, PIPELINE_PREFIX, Pipeline
from runner import contract, leftovers
from tests.loop_harness import SECRET, WRITER, Loop
from tests.webhook_helpers import sign


@dataclass(frozen=True)
class Machine:
    id: str
    labels: tuple[str, ...]


MACHINES = (
    Machine("machine-1", ("default", "gpu")),
    Machine("machine-2", ("default",)),
    Machine("machine-3", ("gpu", "arm")),
    Machine("machine-4", ("default", "arm")),
)
"""Mixed labels; every label is on two machines, so any one of them may die."""
LABELS = ("default", "gpu", "arm")
REDELIVER_SECONDS = 120.0
"""A delivery answered 503 (or not in time) is redelivered until accepted, this long; an
earlier try still queuing holds it back up to a minute (`app.edge.web.QUEUING_TTL_SECONDS`)."""


def config_for(label: str) -> str:
    """The repository's .github/trimo.yml: the script agent, no network (no egress proxy)."""
    return (
        "agent: script\nimage: trimo-agent:base\ntimeout_minutes: 10\nnetwork: none\n"
        f"runner_label: {label}\n"
    )


def script(tag: str, sleep: float) -> str:
    """A run's prompt: a short sleep, then its tag appended to order.txt and committed."""
    return (
        f"/trimo run sleep {sleep} && echo {tag} >> order.txt && git add order.txt "
        f"&& git commit -qm 'Run {tag}'"
    )


@dataclass(frozen=True)
class Plan:
    repos: int = 20
    issues_per_repo: int = 2
    runs_per_issue: int = 5
    sleep: float = 0.2
    app_workers: int = 2
    """`trimo serve` (which has a worker) plus this many minus one `trimo worker`s."""
    concurrency: int = 2
    machines: tuple[Machine, ...] = MACHINES

    @property
    def runs(self) -> int:
        return self.repos * self.issues_per_repo * self.runs_per_issue

    def repo(self, index: int) -> tuple[str, str]:
        """Owner and name of repository `index`: each in an organisation (an installation)
        of its own, as GitHub allows one installation 500 writes an hour (app.reporting.budget)."""
        return f"org-{index:02d}", "svc"

    def label_of(self, index: int) -> str:
        return LABELS[index % len(LABELS)]


@dataclass
class Facts:
    """What Redis says happened, read after the runs ended."""

    pipelines: list[Pipeline]
    starts: Counter[str] = field(default_factory=Counter)
    """RunStarted events per run id (all of them, from the App's event stream)."""
    finishes: Counter[str] = field(default_factory=Counter)
    runner_of: dict[str, str] = field(default_factory=dict)


class Fleet:
    def __init__(self, loop: Loop, plan: Plan) -> None:
        self.loop = loop
        self.plan = plan
        tag = uuid.uuid4().hex[:6]
        self.machines = tuple(Machine(f"{m.id}-{tag}", m.labels) for m in plan.machines)
        """The plan's machines under ids of this fleet's own: a runner at start removes the
        containers its id left, so two fleets on one Docker engine must not share ids."""
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.killed: list[str] = []
        self.redelivered = 0
        self.issues: list[tuple[str, str, int]] = []
        self.label_of_repo: dict[str, str] = {}
        for index in range(plan.repos):
            owner, name = plan.repo(index)
            label = plan.label_of(index)
            loop.gh.install_app(owner)
            loop.gh.create_repo(
                owner, name, {"README.md": f"# {name}\n", ".github/trimo.yml": config_for(label)}
            )
            loop.state.set_role(owner, name, WRITER, "write")
            self.label_of_repo[f"{owner}/{name}"] = label
            for n in range(plan.issues_per_repo):
                number = loop.new_issue(f"Scale {n}", repo=name, owner=owner)
                self.issues.append((owner, name, number))

    def start(self) -> Fleet:
        client = redis.Redis.from_url(self.loop.redis_url)
        try:
            client.flushdb()
        finally:
            client.close()
        self.loop.start_serve()
        for n in range(1, self.plan.app_workers):
            self.processes[f"worker-{n}"] = self.loop._spawn("worker", f"worker-{n}")
        for machine in self.machines:
            self.start_runner(machine)
        client = redis.Redis.from_url(self.loop.redis_url)
        try:
            for machine in self.machines:
                self.loop.wait(
                    lambda m=machine: client.exists(contract.runner_info(m.id)),
                    60,
                    f"{machine.id} to announce itself",
                )
        finally:
            client.close()
        return self

    def start_runner(self, machine: Machine) -> None:
        self.processes[machine.id] = self.loop._spawn(
            "runner",
            machine.id,
            TRIMO_RUNNER_ID=machine.id,
            TRIMO_RUNNER_LABELS=",".join(machine.labels),
            TRIMO_RUNNER_CONCURRENCY=str(self.plan.concurrency),
            TRIMO_CACHE_DIR=str(self.cache_of(machine.id)),
        )

    def cache_of(self, machine_id: str) -> Path:
        return self.loop.workdir / "machines" / machine_id

    def submit(self, senders: int = 8) -> float:
        """Post every run's comment, round by round over the issues, from `senders` threads
        at once (GitHub's deliveries arrive in parallel too); seconds the posting took."""
        payloads = [
            self.loop.comment_event(
                number, script(str(k), self.plan.sleep), repo=repo, owner=owner
            )[1]
            for k in range(1, self.plan.runs_per_issue + 1)
            for owner, repo, number in self.issues
        ]
        began = time.monotonic()
        with ThreadPoolExecutor(senders) as pool:
            list(pool.map(self.deliver, payloads))
        return time.monotonic() - began

    def deliver(self, payload: dict[str, Any]) -> None:
        """One signed delivery. One that failed (a 503: the edge could not queue it in time;
        or no answer within GitHub's 10 s) is redelivered with the same delivery id, as an
        operator would from the App's settings; the edge queues it at most once."""
        body = json.dumps(payload).encode()
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": "issue_comment",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": sign(SECRET, body),
        }
        url = f"http://127.0.0.1:{self.loop.port}/webhooks/github"
        deadline = time.monotonic() + REDELIVER_SECONDS
        while time.monotonic() < deadline:
            try:
                response = self.loop.http.post(url, content=body, headers=headers)
            except httpx.TimeoutException:
                self.redelivered += 1
                continue
            if response.status_code != 503:
                assert response.status_code == 202, response.text
                return
            self.redelivered += 1
            time.sleep(1)  # a redelivery comes a while later, not at once
        raise AssertionError(f"no delivery of {headers['X-GitHub-Delivery']} was accepted")

    def kill(self, machine_id: str) -> None:
        proc = self.processes[machine_id]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        self.killed.append(machine_id)

    def completed_checks(self) -> int:
        return sum(1 for c in self.loop.check_runs() if c.status == "completed")

    def stop(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.processes.values():
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        for machine_id in self.killed:  # what its agents' containers left, as its restart would
            leftovers.clear(docker.from_env(), machine_id, self.cache_of(machine_id))
        self.loop.stop()

    def pipelines(self) -> list[Pipeline]:
        client = redis.Redis.from_url(self.loop.redis_url)
        try:
            ids = sorted(m.decode() for m in cast(set[bytes], client.smembers(PIPELINE_IDS)))
            return [
                Pipeline.model_validate_json(cast(bytes, client.get(PIPELINE_PREFIX + pid)))
                for pid in ids
            ]
        finally:
            client.close()

    def facts(self) -> Facts:
        facts = Facts(pipelines=self.pipelines())
        client = redis.Redis.from_url(self.loop.redis_url)
        try:
            entries = cast(
                list[tuple[bytes, dict[bytes, bytes]]], client.xrange(contract.ALL_RUN_EVENTS)
            )
        finally:
            client.close()
        for _entry, fields in entries:
            event: dict[str, Any] = json.loads(fields[b"event"])
            run_id = fields[b"run_id"].decode()
            if event.get("type") == "started":
                facts.starts[run_id] += 1
                facts.runner_of[run_id] = str(event["runner"])
            elif event.get("type") == "finished":
                facts.finishes[run_id] += 1
        return facts

    def facts_when_all_ended(self, runs: int = 0) -> Facts | None:
        """The facts once the pipelines hold `runs` runs (or more) and recorded every end."""
        held = [run for pipeline in self.pipelines() for run in pipeline.runs]
        ended = len(held) >= runs and all(run.status == "finished" for run in held)
        return self.facts() if ended else None

    def order_on_branch(self, pipeline: Pipeline) -> list[str]:
        owner, repo = pipeline.repo.split("/", 1)
        bare = self.loop.gh.fake.bare_path(owner, repo)
        proc = subprocess.run(
            ["git", "-C", str(bare), "show", f"refs/heads/{pipeline.branch}:order.txt"],
            capture_output=True,
            text=True,
        )
        return proc.stdout.split() if proc.returncode == 0 else []


@dataclass(frozen=True)
class Figures:
    runs: int
    submit_s: float
    """Posting every webhook."""
    wall_s: float
    """From the first webhook to the last check run completed."""
    waits: list[float]
    """Queued on a runner queue → started, per run that started."""
    durations: list[float]
    """Started → finished on the runner, per run."""
    redelivered: int

    @property
    def runs_per_minute(self) -> float:
        return self.runs / self.wall_s * 60


def figures(facts: Facts, submit_s: float, wall_s: float, redelivered: int) -> Figures:
    runs = [run for pipeline in facts.pipelines for run in pipeline.runs]
    return Figures(
        runs=len(runs),
        submit_s=submit_s,
        wall_s=wall_s,
        waits=[w for run in runs if (w := seconds(run.queued_at, run.started_at)) is not None],
        durations=[
            d for run in runs if (d := seconds(run.started_at, run.finished_at)) is not None
        ],
        redelivered=redelivered,
    )


def seconds(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if start and end else None


def percentile(samples: list[float], fraction: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def workdir_of(base: Path) -> Path:
    path = base / "fleet"
    path.mkdir(parents=True, exist_ok=True)
    return path
