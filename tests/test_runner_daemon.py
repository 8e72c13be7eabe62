"""`trimo runner` processes with real Redis, real Docker and real git."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import redis
from arq.constants import in_progress_key_prefix, result_key_prefix, retry_key_prefix

from runner import contract
from runner.job import Outcome
from runner.registry import HEARTBEAT_SECONDS, HOLD_SECONDS
from tests.conftest import free_port, git, unique
from tests.engine_helpers import make_request
from tests.runner_helpers import RunnerProcess, abort, enqueue, events, finished_of, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.redis]

TOKEN = "ghs_TestTokenThatMustNeverLeak0123456789"


@pytest.fixture
def origin(sample_repo: Path, tmp_path: Path) -> Path:
    """A bare repository standing in for the remote."""
    bare = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(sample_repo), str(bare))
    return bare


STARTED_IDS: set[str] = set()


@pytest.fixture
def runners(
    tmp_path: Path, redis_url: str, test_image: str, docker_client: docker.DockerClient
) -> Iterator[list[RunnerProcess]]:
    started: list[RunnerProcess] = []
    yield started
    for proc in started:
        proc.terminate()
    for runner_id in STARTED_IDS:  # a killed runner's containers stay until someone recovers them
        for leftover in docker_client.containers.list(
            all=True, filters={"label": f"dev.trimo.runner={runner_id}"}
        ):
            leftover.remove(force=True)
    STARTED_IDS.clear()


def start(
    runners: list[RunnerProcess],
    redis_url: str,
    tmp_path: Path,
    runner_id: str,
    labels: str,
    **kw: str,
) -> RunnerProcess:
    runner_id = unique(runner_id)
    STARTED_IDS.add(runner_id)
    proc = RunnerProcess(
        redis_url, tmp_path / f"cache-{runner_id}", runner_id, labels, **kw
    ).start()
    runners.append(proc)
    return proc


def has_file(repo: Path, branch: str, name: str) -> bool:
    found = subprocess.run(
        ["git", "cat-file", "-e", f"{branch}:{name}"], cwd=repo, capture_output=True
    )
    return found.returncode == 0


def test_jobs_run_only_on_runners_with_their_label(
    origin: Path, tmp_path: Path, redis_url: str, runners: list[RunnerProcess]
) -> None:
    gpu_runner = start(runners, redis_url, tmp_path, "runner-gpu", "gpu")
    cpu_runner = start(runners, redis_url, tmp_path, "runner-cpu", "default")
    gpu = make_request(
        origin,
        "echo gpu > gpu.txt && git add -A && git commit -qm gpu",
        pipeline="g",
        runner_label="gpu",
    )
    cpu = make_request(
        origin,
        "echo cpu > cpu.txt && git add -A && git commit -qm cpu",
        pipeline="c",
        runner_label="default",
    )
    enqueue(redis_url, gpu)
    enqueue(redis_url, cpu)

    gpu_events = wait_for(redis_url, gpu.run_id, "finished")
    cpu_events = wait_for(redis_url, cpu.run_id, "finished")

    assert next(e for e in gpu_events if e.type == "started").runner == gpu_runner.runner_id
    assert next(e for e in cpu_events if e.type == "started").runner == cpu_runner.runner_id
    assert finished_of(gpu_events).outcome is Outcome.SUCCESS
    assert git(origin, "show", "trimo/g:gpu.txt") == "gpu"
    assert git(origin, "show", "trimo/c:cpu.txt") == "cpu"


def test_several_runs_at_once_on_one_runner(
    origin: Path, tmp_path: Path, redis_url: str, runners: list[RunnerProcess]
) -> None:
    start(runners, redis_url, tmp_path, "runner-1", "default", concurrency=3)
    requests = [make_request(origin, "sleep 8; echo done", pipeline=f"par{i}") for i in range(3)]
    for request in requests:
        enqueue(redis_url, request)
    found = [wait_for(redis_url, request.run_id, "finished") for request in requests]
    assert [finished_of(f).outcome for f in found] == [Outcome.SUCCESS] * 3
    started = [next(e for e in f if e.type == "started").at for f in found]
    assert max(started) < min(finished_of(f).at for f in found)  # all three went at once


def test_stop_mid_run_saves_and_pushes_within_seconds(
    origin: Path,
    tmp_path: Path,
    redis_url: str,
    runners: list[RunnerProcess],
    docker_client: docker.DockerClient,
) -> None:
    start(runners, redis_url, tmp_path, "runner-1", "default")
    request = make_request(
        origin,
        "echo a > a.txt && git add -A && git commit -qm 'Commit a'; echo b > b.txt; sleep 300",
        timeout_s=600,
    )
    enqueue(redis_url, request)
    wait_for(redis_url, request.run_id, "pushed")
    t0 = time.monotonic()
    abort(redis_url, request)
    found = wait_for(redis_url, request.run_id, "finished", timeout=30)
    assert time.monotonic() - t0 < 8
    finished = finished_of(found)
    assert finished.outcome is Outcome.CANCELLED
    assert git(origin, "show", "trimo/p1:a.txt") == "a"
    assert git(origin, "show", "trimo/p1:b.txt") == "b"
    left = docker_client.containers.list(
        all=True, filters={"label": f"dev.trimo.run={request.run_id}"}
    )
    assert left == []


def test_timeout_through_the_runner(
    origin: Path, tmp_path: Path, redis_url: str, runners: list[RunnerProcess]
) -> None:
    start(runners, redis_url, tmp_path, "runner-1", "default")
    request = make_request(origin, "echo late > late.txt; sleep 300", timeout_s=3)
    enqueue(redis_url, request)
    finished = finished_of(wait_for(redis_url, request.run_id, "finished", timeout=60))
    assert finished.outcome is Outcome.TIMED_OUT
    assert git(origin, "show", "trimo/p1:late.txt") == "late"


def test_kill_9_then_restart_saves_and_reports_the_run(
    origin: Path,
    tmp_path: Path,
    redis_url: str,
    runners: list[RunnerProcess],
    docker_client: docker.DockerClient,
) -> None:
    first = start(runners, redis_url, tmp_path, "runner-k", "default")
    request = make_request(
        origin,
        "echo a > a.txt && git add -A && git commit -qm 'Commit a'; "
        "echo unsaved > u.txt; sleep 300",
        timeout_s=600,
    )
    enqueue(redis_url, request)
    wait_for(redis_url, request.run_id, "pushed")
    first.kill9()
    runners.remove(first)

    start(runners, redis_url, tmp_path, "runner-k", "default")
    finished = finished_of(wait_for(redis_url, request.run_id, "finished", timeout=60))

    assert finished.outcome is Outcome.FAILURE
    assert "runner stopped" in finished.reason
    assert git(origin, "show", "trimo/p1:a.txt") == "a"
    assert git(origin, "show", "trimo/p1:u.txt") == "unsaved"
    left = docker_client.containers.list(
        all=True, filters={"label": f"dev.trimo.run={request.run_id}"}
    )
    assert left == []


def test_token_never_reaches_container_or_events(
    origin: Path, tmp_path: Path, redis_url: str, runners: list[RunnerProcess]
) -> None:
    runner = start(runners, redis_url, tmp_path, "runner-t", "default")
    request = make_request(
        origin,
        # The token is split in the script so only what the runner adds could contain it whole.
        "env > env.txt; grep -rl 'ghs_Test''Token' /workspace /home /trimo /tmp /etc "
        "2>/dev/null > found.txt; "
        f"echo 'the token is {TOKEN[:10]}''{TOKEN[10:]}'; git add -A && git commit -qm probe",
        token=TOKEN,
    )
    enqueue(redis_url, request)
    found = wait_for(redis_url, request.run_id, "finished")

    assert finished_of(found).outcome is Outcome.SUCCESS
    assert "ghs_" not in git(origin, "show", "trimo/p1:env.txt")
    assert git(origin, "show", "trimo/p1:found.txt") == ""
    published = "".join(e.model_dump_json() for e in events(redis_url, request.run_id))
    assert TOKEN not in published
    assert "the token is ***" in published
    assert TOKEN not in runner.output()
    for path in (tmp_path / f"cache-{runner.runner_id}").rglob("*"):
        if path.is_file() and path.stat().st_size < 5_000_000:
            assert TOKEN.encode() not in path.read_bytes(), path


def test_runner_policy_refuses_before_anything_starts(
    origin: Path, tmp_path: Path, redis_url: str, runners: list[RunnerProcess]
) -> None:
    start(runners, redis_url, tmp_path, "runner-p", "default", TRIMO_RUNNER_ALLOWED_NETWORKS="none")
    request = make_request(origin, "echo hi", network="bridge")
    enqueue(redis_url, request)
    found = wait_for(redis_url, request.run_id, "finished")
    assert [e.type for e in found] == ["finished"]
    assert "does not allow network 'bridge'" in finished_of(found).reason
    assert git(origin, "branch", "--list", "trimo/p1") == ""


def test_run_of_a_vanished_runner_is_marked_failed(
    origin: Path, tmp_path: Path, redis_url: str, runners: list[RunnerProcess]
) -> None:
    doomed = start(runners, redis_url, tmp_path, "runner-doomed", "default")
    request = make_request(origin, "echo started; sleep 300", timeout_s=600)
    enqueue(redis_url, request)
    wait_for(redis_url, request.run_id, "started")
    doomed.kill9()
    runners.remove(doomed)
    start(runners, redis_url, tmp_path, "runner-survivor", "other")

    finished = finished_of(wait_for(redis_url, request.run_id, "finished", timeout=60))
    assert finished.outcome is Outcome.ERROR
    assert f"{doomed.runner_id} stopped answering" in finished.reason


def test_sigterm_drains_running_jobs_and_takes_no_new_ones(
    origin: Path, tmp_path: Path, redis_url: str, runners: list[RunnerProcess]
) -> None:
    runner = start(runners, redis_url, tmp_path, "runner-d", "default")
    running = make_request(origin, "sleep 2; echo x > x.txt && git add -A && git commit -qm x")
    enqueue(redis_url, running)
    wait_for(redis_url, running.run_id, "started")
    assert runner.proc is not None
    runner.proc.terminate()
    runner.wait_for_output("draining:")
    late = make_request(origin, "echo late", pipeline="late")
    enqueue(redis_url, late)

    assert runner.proc.wait(60) == 0, runner.output()[-12000:]
    assert finished_of(events(redis_url, running.run_id)).outcome is Outcome.SUCCESS
    assert git(origin, "show", "trimo/p1:x.txt") == "x"
    assert events(redis_url, late.run_id) == []


def test_runner_rides_out_a_redis_outage(
    origin: Path, tmp_path: Path, runners: list[RunnerProcess], test_image: str
) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"

    def redis_server() -> None:
        subprocess.run(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--daemonize", "yes",
             "--save", "", "--appendonly", "no"],
            check=True,
        )  # fmt: skip
        for _ in range(50):
            if (
                subprocess.run(
                    ["redis-cli", "-p", str(port), "ping"], capture_output=True
                ).returncode
                == 0
            ):
                return
            time.sleep(0.1)

    redis_server()
    try:
        runner = start(runners, url, tmp_path, "runner-r", "default")
        request = make_request(
            origin,
            "sleep 4; echo kept > kept.txt && git add -A && git commit -qm kept",
            timeout_s=120,
        )
        enqueue(url, request)
        wait_for(url, request.run_id, "started")
        subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], capture_output=True)
        runner.wait_for_output("Redis is unreachable")
        deadline = time.monotonic() + 60  # the run ends and pushes while Redis is down
        while not has_file(origin, "trimo/p1", "kept.txt"):
            assert time.monotonic() < deadline, runner.output()
            time.sleep(0.2)
        redis_server()
        found = wait_for(url, request.run_id, "finished", timeout=60)
        assert finished_of(found).outcome is Outcome.SUCCESS
        assert git(origin, "show", "trimo/p1:kept.txt") == "kept"
    finally:
        subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], capture_output=True)


def test_a_job_whose_runner_died_before_marking_its_run_is_run_by_another(
    origin: Path, tmp_path: Path, redis_url: str, runners: list[RunnerProcess]
) -> None:
    """A runner killed between arq's pickup and marking the run active held the job for its
    whole timeout (25 h), and no reaper knew of the run: it stayed queued, and its pipeline's
    next runs waited behind it (the scale-out test saw it). Here is that state (the pickup's
    hold, its try counted); the hold lapses and another runner runs the job."""
    request = make_request(origin, "echo rescued > r.txt && git add -A && git commit -qm r")
    enqueue(redis_url, request)
    client = redis.Redis.from_url(redis_url)
    client.psetex(in_progress_key_prefix + request.run_id, 2000, b"1")
    client.incr(retry_key_prefix + request.run_id)
    start(runners, redis_url, tmp_path, "runner-rescue", "default")

    finished = finished_of(wait_for(redis_url, request.run_id, "finished", timeout=90))
    assert finished.outcome is Outcome.SUCCESS, finished.reason
    assert has_file(origin, "trimo/p1", "r.txt")


def test_a_run_a_runner_took_is_never_run_again(
    origin: Path, tmp_path: Path, redis_url: str, runners: list[RunnerProcess]
) -> None:
    """A job picked up again after its runner's hold lapsed (the runner killed, or cut off
    from Redis for a minute) is not run a second time: the first runner took the run."""
    request = make_request(origin, "echo twice >> t.txt && git add -A && git commit -qm t")
    enqueue(redis_url, request)
    client = redis.Redis.from_url(redis_url)
    client.set(contract.run_taken(request.run_id), "runner-that-took-it")
    client.incr(retry_key_prefix + request.run_id)
    runner = start(runners, redis_url, tmp_path, "runner-second", "default")

    deadline = time.monotonic() + 60
    while not client.exists(result_key_prefix + request.run_id):
        assert time.monotonic() < deadline, f"the job was never picked up: {runner.output()}"
        time.sleep(0.1)
    assert "a runner took it before; it is not run again" in runner.output()
    assert events(redis_url, request.run_id) == []
    assert not has_file(origin, "trimo/p1", "t.txt")


def test_a_runners_hold_on_its_jobs_is_short_and_renewed(
    origin: Path, tmp_path: Path, redis_url: str, runners: list[RunnerProcess]
) -> None:
    request = make_request(origin, "echo started; sleep 60", timeout_s=120)
    enqueue(redis_url, request)
    start(runners, redis_url, tmp_path, "runner-holds", "default")
    wait_for(redis_url, request.run_id, "started")
    client = redis.Redis.from_url(redis_url)
    hold = in_progress_key_prefix + request.run_id
    last = client.pttl(hold)
    assert 0 < last <= HOLD_SECONDS * 1000
    deadline = time.monotonic() + 3 * HEARTBEAT_SECONDS
    while (now := client.pttl(hold)) <= last:
        assert time.monotonic() < deadline, "the runner's hold on its job was not renewed"
        last = now
        time.sleep(0.1)
    abort(redis_url, request)
    assert finished_of(wait_for(redis_url, request.run_id, "finished")).outcome is Outcome.CANCELLED


def test_a_hold_that_lapsed_while_its_runner_goes_on_is_made_again(
    origin: Path, tmp_path: Path, redis_url: str, runners: list[RunnerProcess]
) -> None:
    """Redis back from a file without the hold (or away for over a minute): the job sits in
    its queue with no hold while its run goes on. Its runner, with a free slot, must not
    take it again (arq would lose track of the run: a Stop would no longer reach it), and
    its heartbeat makes the hold again."""
    request = make_request(origin, "echo started; sleep 60", timeout_s=120)
    enqueue(redis_url, request)
    runner = start(runners, redis_url, tmp_path, "runner-lapsed", "default")
    wait_for(redis_url, request.run_id, "started")
    client = redis.Redis.from_url(redis_url)
    hold = in_progress_key_prefix + request.run_id
    client.delete(hold)
    deadline = time.monotonic() + 3 * HEARTBEAT_SECONDS
    while not client.exists(hold):
        assert time.monotonic() < deadline, "the lapsed hold was not made again"
        time.sleep(0.1)
    assert "it is not run again" not in runner.output()
    abort(redis_url, request)
    assert finished_of(wait_for(redis_url, request.run_id, "finished")).outcome is Outcome.CANCELLED
