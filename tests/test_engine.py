"""The run engine with real Docker and real git: the script agent edits and commits."""

from __future__ import annotations

import threading
from pathlib import Path

import docker
import pytest

from runner.engine import StopSignal
from runner.job import Outcome
from tests.conftest import git
from tests.engine_helpers import has_file_named, make_request, record_of, run

pytestmark = pytest.mark.docker


def test_commit_lands_on_pipeline_branch_and_user_tree_is_untouched(
    sample_repo: Path, cache: Path
) -> None:
    (sample_repo / "src.txt").write_text("my uncommitted edit\n")
    (sample_repo / "scratch.txt").write_text("untracked\n")
    status_before = git(sample_repo, "status", "--porcelain")
    head_before = git(sample_repo, "rev-parse", "HEAD")

    request = make_request(
        sample_repo,
        'echo "hello from the agent" > hello.txt && git add hello.txt '
        '&& git commit -qm "Add hello"',
    )
    finished, events = run(cache, request)

    assert finished.outcome is Outcome.SUCCESS, finished.reason
    assert [c.subject for c in finished.commits] == ["Add hello"]
    assert git(sample_repo, "show", "trimo/p1:hello.txt") == "hello from the agent"
    assert git(sample_repo, "log", "-1", "--format=%an", "trimo/p1") == "Trimo Agent"
    assert git(sample_repo, "rev-parse", "trimo/p1~1") == head_before
    assert finished.diff.files[0].path == "hello.txt" and finished.diff.files[0].added == 1
    # The user's branch, index and working tree are exactly as they were.
    assert git(sample_repo, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert git(sample_repo, "rev-parse", "HEAD") == head_before
    assert git(sample_repo, "status", "--porcelain") == status_before
    assert (sample_repo / "src.txt").read_text() == "my uncommitted edit\n"
    assert not (sample_repo / "hello.txt").exists()
    kinds = [e.type for e in events.events]
    assert kinds[0] == "started" and kinds[-1] == "finished" and "pushed" in kinds


def test_follow_up_run_continues_the_branch_with_context(sample_repo: Path, cache: Path) -> None:
    first = make_request(
        sample_repo, "echo one > one.txt && git add -A && git commit -qm 'First step'"
    )
    finished1, _ = run(cache, first)
    assert finished1.outcome is Outcome.SUCCESS

    second = make_request(
        sample_repo,
        "cat /trimo/context.md > seen-context.md && git add -A && git commit -qm 'Second step'",
        history=[record_of(first, finished1)],
    )
    finished2, _ = run(cache, second)

    assert finished2.outcome is Outcome.SUCCESS, finished2.reason
    subjects = git(sample_repo, "log", "--format=%s", "main..trimo/p1").splitlines()
    assert subjects == ["Second step", "First step"]
    seen = git(sample_repo, "show", "trimo/p1:seen-context.md")
    assert "First step" in seen and "echo one > one.txt" in seen
    assert [c.subject for c in finished2.commits] == ["Second step"]


def test_timeout_stops_the_agent_and_saves_its_work(sample_repo: Path, cache: Path) -> None:
    request = make_request(
        sample_repo, "echo partial > partial.txt; echo started; sleep 120", timeout_s=3
    )
    finished, _ = run(cache, request)

    assert finished.outcome is Outcome.TIMED_OUT
    assert git(sample_repo, "show", "trimo/p1:partial.txt") == "partial"
    subject = git(sample_repo, "log", "-1", "--format=%s", "trimo/p1")
    assert subject.startswith("trimo: echo partial")


def test_failing_agent_is_reported_and_its_work_saved(sample_repo: Path, cache: Path) -> None:
    request = make_request(sample_repo, "echo half-done > wip.txt; echo 'cannot go on' >&2; exit 3")
    finished, events = run(cache, request)

    assert finished.outcome is Outcome.FAILURE
    assert "code 3" in finished.reason
    assert git(sample_repo, "show", "trimo/p1:wip.txt") == "half-done"
    assert "cannot go on" in events.text()


def test_stop_mid_run_saves_committed_and_uncommitted_work(sample_repo: Path, cache: Path) -> None:
    request = make_request(
        sample_repo,
        "echo a > a.txt && git add a.txt && git commit -qm 'Commit a'; "
        "echo b > b.txt; echo ready; sleep 120",
    )
    stop = StopSignal()

    def stop_when_ready() -> None:
        for _ in range(200):
            if has_file_named(cache / "pipelines", "b.txt"):
                stop.stop("stopped by a test")
                return
            threading.Event().wait(0.1)

    stopper = threading.Thread(target=stop_when_ready)
    stopper.start()
    finished, _ = run(cache, request, stop)
    stopper.join()

    assert finished.outcome is Outcome.CANCELLED
    assert finished.reason == "stopped by a test"
    assert git(sample_repo, "show", "trimo/p1:a.txt") == "a"
    assert git(sample_repo, "show", "trimo/p1:b.txt") == "b"
    subjects = git(sample_repo, "log", "--format=%s", "main..trimo/p1").splitlines()
    assert subjects[1] == "Commit a" and subjects[0].startswith("trimo: ")


def test_rewritten_history_is_salvaged_not_force_pushed(sample_repo: Path, cache: Path) -> None:
    first = make_request(sample_repo, "echo 1 > one.txt && git add -A && git commit -qm 'One'")
    finished1, _ = run(cache, first)
    published = git(sample_repo, "rev-parse", "trimo/p1")

    second = make_request(
        sample_repo,
        "git reset -q --hard HEAD~1 && echo 2 > two.txt && git add -A && git commit -qm 'Two'",
        history=[record_of(first, finished1)],
    )
    finished2, events = run(cache, second)

    assert git(sample_repo, "rev-parse", "trimo/p1") == published
    assert finished2.salvage_ref == f"refs/trimo/salvage/{second.run_id}"
    assert git(sample_repo, "show", f"{finished2.salvage_ref}:two.txt") == "2"
    assert finished2.outcome is Outcome.FAILURE
    assert "rewrote" in finished2.reason
    assert events.of_type("salvaged")
    # The remote holds it: the runner's mirror keeps no ref per salvaged run for ever.
    [mirror] = (cache / "mirrors").glob("*.git")
    assert not git(mirror, "for-each-ref", "refs/trimo/salvage"), "the mirror kept it"


def test_missing_image_is_a_clear_error(sample_repo: Path, cache: Path) -> None:
    finished, _ = run(cache, make_request(sample_repo, "true", image="trimo-no-such-image:1"))
    assert finished.outcome is Outcome.ERROR
    assert "trimo image build" in finished.reason


def test_unknown_agent_is_a_clear_error(sample_repo: Path, cache: Path) -> None:
    finished, _ = run(cache, make_request(sample_repo, "true", agent="nosuchagent"))
    assert finished.outcome is Outcome.ERROR
    assert "script" in finished.reason  # lists the agents that exist


def test_no_container_is_left_behind(
    sample_repo: Path, cache: Path, docker_client: docker.DockerClient
) -> None:
    request = make_request(sample_repo, "exit 0")
    run(cache, request)
    left = docker_client.containers.list(
        all=True, filters={"label": f"dev.trimo.run={request.run_id}"}
    )
    assert left == []


def test_a_bug_mid_run_still_ends_the_run_once_and_saves_its_work(
    sample_repo: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runner.agents.script import ScriptAdapter

    def broken(self: ScriptAdapter, line: str) -> list[object]:
        if "boom" in line:
            raise RuntimeError("a bug in an adapter")
        return []

    monkeypatch.setattr(ScriptAdapter, "parse_line", broken)
    request = make_request(sample_repo, "echo saved > saved.txt; echo boom; sleep 30")
    finished, events = run(cache, request)

    assert [e.type for e in events.events].count("finished") == 1
    assert finished.outcome is Outcome.ERROR
    assert "Trimo failed on the runner (reference" in finished.reason
    assert git(sample_repo, "show", "trimo/p1:saved.txt") == "saved"
