"""The whole loop against a GitHub that misbehaves: every accepted request ends visibly.

`trimo serve` and `trimo runner` run as real processes against real Redis, Docker and
git, as in test_end_to_end.py; the stand-in injects errors and slow answers at set rates
(seeded: TRIMO_CHAOS_SEED replays a run), or things people do on GitHub mid-run. Whatever
happens, each command must end in something a person can see: a reply on its thread (any
comment by the App but the live "queued"/"running" note), a completed check run, or an
entry in the dead-letter stream for the operator. And the App must still be running.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest
import redis

from app.reporting.failures import FAILED_EVENTS
from tests.fakegithub import Chaos
from tests.loop_harness import OWNER, REPO, Loop, running_loop

pytestmark = [pytest.mark.docker, pytest.mark.redis]

SEED = int(os.environ.get("TRIMO_CHAOS_SEED", "9"))
LIVE_NOTES = ("🕓", "🚀")  # the progress note while queued or running: not an end
COMMIT = "echo {n} > f{n}.txt && git add -A && git commit -qm 'Step {n}'"


@pytest.fixture(scope="module")
def loop(
    redis_server: str, tmp_path_factory: pytest.TempPathFactory, corpora: Path, test_image: str
) -> Iterator[Loop]:
    with running_loop(
        redis_server, tmp_path_factory.mktemp("chaos"), corpora, strict=False
    ) as loop:
        yield loop


@dataclass
class Request:
    """One accepted command: where it was asked, and what shows for it now."""

    number: int
    comment_id: int
    text: str


def parked_comment_ids(loop: Loop) -> set[int]:
    client = redis.Redis.from_url(loop.redis_url)
    try:
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange(FAILED_EVENTS))
    finally:
        client.close()
    ids = set()
    for _, fields in entries:
        payload = json.loads(fields.get(b"payload", b"{}"))
        comment = payload.get("comment") if isinstance(payload, dict) else None
        if isinstance(comment, dict) and isinstance(comment.get("id"), int):
            ids.add(comment["id"])
    return ids


def seen(loop: Loop, request: Request, parked: set[int]) -> str | None:
    """What a person can see as the end of `request`, or None while there is nothing."""
    hint = f"{REPO}.{request.number}-"
    for check in loop.check_runs():
        if hint in (check.external_id or "") and check.status == "completed":
            return f"check run {check.conclusion}"
    with loop.state.lock:
        replies = [
            c
            for c in loop.state.comments.values()
            if (c.owner, c.repo, c.issue_number) == (OWNER, REPO, request.number)
            and c.via_app
            and c.id > request.comment_id
        ]
    for reply in replies:
        if not reply.body.startswith(LIVE_NOTES):
            return "reply: " + reply.body.splitlines()[0][:120]
    if request.comment_id in parked:
        return "dead-letter entry"
    return None


def report(loop: Loop, requests: list[Request]) -> str:
    """Why the test failed: each request's visible state, and the App's last errors."""
    parked = parked_comment_ids(loop)
    lines = [f"chaos seed {SEED}; injected: {len(loop.state.chaos_log)}"]
    for r in requests:
        checks = [
            (c.status, c.conclusion)
            for c in loop.check_runs()
            if f"{REPO}.{r.number}-" in (c.external_id or "")
        ]
        notes = [b.splitlines()[0][:80] for b in loop.bot_comments(r.number)]
        lines.append(f"#{r.number} {r.text!r}: {seen(loop, r, parked)}; checks {checks}; {notes}")
    for name in ("serve", "runner"):
        errors = [
            line for line in loop.log(name).splitlines() if "Error" in line or "Traceback" in line
        ]
        lines += [f"{name}.log: {line}" for line in errors[-8:]]
    return "\n".join(lines)


def ask(loop: Loop, title: str, command: str) -> Request:
    number = loop.new_issue(title)
    comment = loop.comment(number, command)  # the web edge accepted it (2xx), or this raises
    return Request(number, comment.id, command)


def every_request_ends_visibly(loop: Loop, requests: list[Request], timeout: float) -> None:
    def all_seen() -> bool:
        parked = parked_comment_ids(loop)
        return all(seen(loop, r, parked) for r in requests)

    try:
        loop.wait(all_seen, timeout, "every request to end in something a person can see")
    except AssertionError:
        raise AssertionError(report(loop, requests)) from None
    for name, proc in (("serve", loop.serve), ("runner", loop.runner)):
        assert proc is not None and proc.poll() is None, f"trimo {name} died:\n" + report(
            loop, requests
        )


def test_under_random_errors_and_slow_answers_every_request_ends_visibly(loop: Loop) -> None:
    loop.state.chaos = Chaos(
        seed=SEED,
        rates={"5xx": 0.08, "404": 0.03, "403": 0.03, "422": 0.02, "slow": 0.02},
        slow_seconds=11,  # beyond the 10 s a client should wait
    )
    try:
        requests = [ask(loop, f"Chaos {n}", "/trimo run " + COMMIT.format(n=n)) for n in range(4)]
        requests.append(ask(loop, "Chaos failing", "/trimo run echo partial > p.txt; exit 3"))
        requests.append(
            ask(
                loop,
                "Chaos workflow",
                "/trimo run mkdir -p .github/workflows && echo 'on: push' > "
                ".github/workflows/ci.yml && git add -A && git commit -qm CI",
            )
        )
        requests.append(ask(loop, "Chaos status", "/trimo status"))
        every_request_ends_visibly(loop, requests, timeout=300)
    finally:
        loop.state.chaos = None
    assert len(loop.state.chaos_log) >= 5, "chaos hardly struck: raise the rates"
    assert loop.state.violations == []


def test_people_changing_github_mid_run_never_hide_the_end(loop: Loop) -> None:
    slow = "/trimo run sleep 5; " + COMMIT.format(n=1)
    deleted_issue = ask(loop, "Deleted mid-run", slow)
    lost_note = ask(loop, "Progress note deleted", slow)
    lost_check = ask(loop, "Check run deleted", slow)
    loop.state.refuse_pull("exists")  # someone opens a pull request from the branch first
    taken_pull = ask(loop, "Pull request exists", "/trimo run " + COMMIT.format(n=2))
    requests = [deleted_issue, lost_note, lost_check, taken_pull]

    loop.wait(lambda: loop.check_for(f"{REPO}.{deleted_issue.number}-"), 60, "a check run")
    loop.state.delete_issue(OWNER, REPO, deleted_issue.number)

    def running_note() -> int | None:
        with loop.state.lock:
            return next(
                (
                    c.id
                    for c in loop.state.comments.values()
                    if c.issue_number == lost_note.number and c.via_app and "🚀" in c.body
                ),
                None,
            )

    note = loop.wait(running_note, 60, "the running note")
    assert note is not None
    loop.state.delete_comment(note)
    check = loop.wait(lambda: loop.check_for(f"{REPO}.{lost_check.number}-"), 60, "a check run")
    assert check is not None
    loop.state.delete_check_run(check.id)

    every_request_ends_visibly(loop, requests, timeout=180)
    assert loop.state.violations == []


def unfinished_checks(loop: Loop, requests: list[Request]) -> list[str]:
    return [
        f"#{r.number}: check run {c.id} {c.status}"
        for r in requests
        for c in loop.check_runs()
        if f"{REPO}.{r.number}-" in (c.external_id or "") and c.status != "completed"
    ]


def test_no_check_run_is_left_queued_or_running(loop: Loop) -> None:
    """A check run shows on the commit for good: each one the App made must end.

    Two ways to leave one behind: GitHub creates a check run although the App's request
    timed out (the App tries again and makes a second), and a run that cannot start
    because its issue was deleted.
    """
    loop.state.chaos = Chaos(
        seed=SEED, endpoints={"create_check_run": {"slow": 1.0}}, slow_seconds=16
    )
    try:
        timed_out = ask(loop, "Check run slow to create", "/trimo run " + COMMIT.format(n=3))
        loop.wait(lambda: loop.state.chaos_log, 30, "a slow check-run creation")
    finally:
        loop.state.chaos = None
    deleted = ask(loop, "Deleted at once", "/trimo run sleep 5; " + COMMIT.format(n=4))
    loop.wait(lambda: loop.check_for(f"{REPO}.{deleted.number}-"), 60, "a check run")
    loop.state.delete_issue(OWNER, REPO, deleted.number)
    requests = [timed_out, deleted]

    every_request_ends_visibly(loop, requests, timeout=120)
    try:
        loop.wait(lambda: not unfinished_checks(loop, requests), 60, "every check run to end")
    except AssertionError:
        raise AssertionError(
            "\n".join(unfinished_checks(loop, requests)) + "\n" + report(loop, requests)
        ) from None
