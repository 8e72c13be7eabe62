"""The whole loop, every part real except GitHub: a signed webhook to a pushed branch.

`trimo serve` and `trimo runner` run as separate processes against real Redis and
real Docker; the GitHub side is the local stand-in with its real git server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from app.reporting.reporter import RUN_LOCK_PREFIX
from runner.contract import ACTIVE_RUNS
from tests.loop_harness import Loop, running_loop

pytestmark = [pytest.mark.docker, pytest.mark.redis]


@pytest.fixture(scope="module")
def loop(
    redis_server: str, tmp_path_factory: pytest.TempPathFactory, corpora: Path, test_image: str
) -> Iterator[Loop]:
    with running_loop(redis_server, tmp_path_factory.mktemp("loop"), corpora) as loop:
        yield loop


def finished_check(loop: Loop, number: int, timeout: float = 90) -> str:
    """Wait for the check run of the latest run on issue `number` to complete."""
    hint = f"widgets.{number}-"

    def completed() -> str | None:
        runs = [c for c in loop.check_runs() if hint in (c.external_id or "")]
        latest = max(runs, key=lambda c: c.id) if runs else None
        return latest.conclusion if latest and latest.status == "completed" else None

    return loop.wait(completed, timeout, f"the check run of issue #{number} to complete")


def branch_of(loop: Loop, number: int) -> str:
    return loop.wait(
        lambda: next((b for b in loop.branches() if b.startswith(f"trimo/{number}-")), None),
        60,
        f"the branch of issue #{number}",
    )


def test_a_comment_becomes_commits_a_pull_request_and_a_follow_up(loop: Loop) -> None:
    number = loop.new_issue("Greet the world", "Please add a greeting file.")
    comment = loop.comment(
        number, "/trimo run echo hi > hi.txt && git add hi.txt && git commit -qm 'Say hi'"
    )

    assert finished_check(loop, number) == "success"
    branch = branch_of(loop, number)
    assert branch == f"trimo/{number}-greet-the-world"
    assert loop.file_on(branch, "hi.txt") == "hi\n"
    assert "eyes" in loop.reactions(comment.id) and "rocket" in loop.reactions(comment.id)
    check = loop.check_for(f"widgets.{number}-")
    assert check is not None and check.output["title"].startswith("✅")
    progress = loop.wait(
        lambda: [b for b in loop.bot_comments(number) if "finished after" in b], 30, "final note"
    )
    assert "Say hi" in progress[0] and "hi.txt" in progress[0]
    pulls = loop.wait(lambda: loop.state.pulls_for(branch), 30, "a pull request")
    assert pulls[0].base_ref == "main" and f"Closes #{number}" in (pulls[0].body or "")
    in_progress = [
        r for r in loop.state.requests_to("PATCH", r"/check-runs/\d+")
        if (r.json or {}).get("status") == "in_progress"
    ]  # fmt: skip
    assert in_progress, "the check run never showed the run in progress"

    # A follow-up continues the same branch, with the first run's context.
    loop.comment(
        number,
        "/trimo run cat /trimo/context.md > ctx.md && git add ctx.md "
        "&& git commit -qm 'Read context'",
    )
    loop.wait(
        lambda: loop.file_on(branch, "ctx.md"), 90, "the follow-up's commit on the same branch"
    )
    assert "Say hi" in (loop.file_on(branch, "ctx.md") or "")
    assert loop.file_on(branch, "hi.txt") == "hi\n"
    assert loop.wait(
        lambda: any(
            "Read context" in b and "finished after" in b for b in loop.bot_comments(number)
        ),
        60,
        "the follow-up's final note",
    )


def test_stop_mid_run_is_cancelled_and_the_work_pushed(loop: Loop) -> None:
    number = loop.new_issue("Long job")
    loop.comment(
        number,
        "/trimo run echo a > a.txt && git add a.txt && git commit -qm 'Step a'; "
        "echo b > b.txt; sleep 300",
    )
    branch = branch_of(loop, number)
    loop.wait(lambda: loop.file_on(branch, "a.txt"), 60, "the first commit to be pushed")
    loop.comment(number, "/trimo stop")

    assert finished_check(loop, number, timeout=60) == "cancelled"
    assert loop.file_on(branch, "a.txt") == "a\n"
    assert loop.file_on(branch, "b.txt") == "b\n"  # uncommitted work, saved


def test_a_failing_agent_is_reported_with_its_reason(loop: Loop) -> None:
    number = loop.new_issue("Doomed")
    loop.comment(number, "/trimo run echo partial > p.txt; echo broken >&2; exit 4")

    assert finished_check(loop, number) == "failure"
    note = loop.wait(
        lambda: [b for b in loop.bot_comments(number) if "failed after" in b], 30, "failure note"
    )
    assert "exited with code 4" in note[0]
    assert "saved" in note[0]
    assert loop.file_on(branch_of(loop, number), "p.txt") == "partial\n"


def test_the_app_restarted_mid_run_loses_nothing(loop: Loop) -> None:
    """Killed while it reports the run, the App leaves the run's report lock behind: the
    App that replaces it reports the run's end once that lapses, not minutes later."""
    client = redis.Redis.from_url(loop.redis_url)
    number = loop.new_issue("Survive a restart")
    loop.comment(
        number, "/trimo run sleep 6; echo done > done.txt && git add -A && git commit -qm Done"
    )
    loop.wait(
        lambda: any(f"widgets.{number}-" in run.decode() for run in client.hkeys(ACTIVE_RUNS)),
        60,
        "the runner to take the run",
    )
    loop.state.delay = 2.0  # GitHub answers slowly: each report of the run takes seconds
    try:
        locked = loop.wait(
            lambda: list(client.scan_iter(f"{RUN_LOCK_PREFIX}*widgets.{number}-*")),
            90,
            "the App to be reporting the run",
        )
        loop.kill_serve()
    finally:
        loop.state.delay = 0.0
    assert client.exists(*locked), "the lock went before the App was killed"
    client.close()
    loop.start_serve()

    assert finished_check(loop, number) == "success"
    assert loop.file_on(branch_of(loop, number), "done.txt") == "done\n"
    assert loop.wait(
        lambda: any("finished after" in b for b in loop.bot_comments(number)), 30, "final note"
    )


def test_github_errors_while_reporting_delay_but_never_lose_the_final_state(loop: Loop) -> None:
    number = loop.new_issue("Flaky GitHub")
    loop.comment(number, "/trimo run sleep 2; echo ok > ok.txt && git add -A && git commit -qm ok")
    loop.wait(lambda: loop.check_for(f"widgets.{number}-"), 30, "the check run")
    # Every check-run update fails for a while: server errors, then a secondary rate limit.
    loop.state.fail_next("PATCH", r"/check-runs/\d+$", 502, times=4)
    loop.state.fail_next(
        "PATCH",
        r"/check-runs/\d+$",
        403,
        headers={"retry-after": "1"},
        body={"message": "You have exceeded a secondary rate limit."},
        times=2,
    )
    assert finished_check(loop, number, timeout=120) == "success"
    assert loop.state.faults == []  # every injected failure was met, and ridden out
    assert loop.file_on(branch_of(loop, number), "ok.txt") == "ok\n"
