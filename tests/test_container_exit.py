"""How a container ended, as Docker reports it: its OOM flag comes from an event of Docker's
own, which under load arrives after the exit (seen in a full run beside CPU hogs: an
out-of-memory agent reported as "exited with code 137")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runner.attempt import exit_reason
from runner.container import AgentContainer, ContainerSpec
from runner.job import Resources


class LateOomContainer:
    """Exits 137 at once; Docker's OOM event is applied only after `late` more inspects."""

    id = "c0ffee"

    def __init__(self, late: int, oom: bool = True) -> None:
        self.late, self.oom, self.inspects = late, oom, 0
        self.stopped = False
        self.attrs: dict[str, Any] = {}

    def wait(self, timeout: float) -> dict[str, int]:
        return {"StatusCode": 137}

    def reload(self) -> None:
        self.inspects += 1
        flag = self.oom and self.inspects > self.late
        self.attrs = {"State": {"ExitCode": 137, "OOMKilled": flag}}

    def stop(self, timeout: int) -> None:
        self.stopped = True


class Containers:
    def __init__(self, container: LateOomContainer) -> None:
        self.container = container

    def create(self, **kwargs: Any) -> LateOomContainer:
        return self.container


class Client:
    def __init__(self, container: LateOomContainer) -> None:
        self.containers = Containers(container)


def container_of(double: LateOomContainer, tmp_path: Path) -> AgentContainer:
    spec = ContainerSpec(
        image="trimo-agent:base", command=["true"], workspace=tmp_path, context_dir=tmp_path,
        out_dir=tmp_path, home=None, user="1000:1000", network="none",
        resources=Resources(memory="64m", cpus=1.0, pids=64),
    )  # fmt: skip
    return AgentContainer(Client(double), spec)


def test_an_oom_event_after_the_exit_still_says_out_of_memory(tmp_path: Path) -> None:
    double = LateOomContainer(late=3)
    ended = container_of(double, tmp_path).wait(timeout=5)
    assert ended.exit_code == 137
    assert ended.oom_killed


def test_a_kill_that_was_no_oom_is_not_called_one_and_waits_a_bounded_time(
    tmp_path: Path,
) -> None:
    double = LateOomContainer(late=0, oom=False)
    ended = container_of(double, tmp_path).wait(timeout=5, oom_seconds=0.3)
    assert (ended.exit_code, ended.oom_killed) == (137, False)
    assert 1 < double.inspects < 20


def test_a_container_trimo_stopped_is_not_asked_again(tmp_path: Path) -> None:
    double = LateOomContainer(late=3)
    container = container_of(double, tmp_path)
    container.stop(grace_seconds=0)
    ended = container.wait(timeout=5)
    assert double.stopped and double.inspects == 1
    assert not ended.oom_killed


def test_a_killed_agent_docker_said_nothing_of_is_told_as_likely_out_of_memory() -> None:
    assert exit_reason(137, "64m") == (
        "the agent was killed (exit code 137), most likely out of memory: past its 64m limit "
        "the kernel kills it"
    )
    assert exit_reason(1, "64m") == "the agent exited with code 1"
