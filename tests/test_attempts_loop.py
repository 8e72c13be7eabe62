"""Attempts through the whole loop (real processes, Redis, Docker and git; GitHub's
stand-in): `/trimo run --attempts 3` ranks a passing, a failing and a crashing attempt;
`--agents` runs one attempt per agent; `/trimo pick` keeps one (and switches); a follow-up
continues from the pick; `/trimo stop` stops every attempt; the cap is refused by name."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from app.conversation.naming import issue_branch
from tests.loop_harness import CONFIG, Loop, running_loop

pytestmark = [pytest.mark.docker, pytest.mark.redis]

VERIFY = """\
verify:
  - name: answer
    run: grep -qx good answer.txt
"""
# Attempt 1 answers wrong, attempt 2 right, attempt 3 crashes; each knows its branch.
BY_ATTEMPT = (
    'case "$(git symbolic-ref --short HEAD)" in '
    "*-attempt-1) echo bad > answer.txt;; "
    "*-attempt-2) echo good > answer.txt; echo extra > more.txt;; "
    "*) echo 'no idea'; exit 3;; esac; "
    'git add -A && git commit -qm "Answer $(cat answer.txt)" && echo "said $(cat answer.txt)"'
)


@pytest.fixture(scope="module")
def loop(
    redis_server: str, tmp_path_factory: pytest.TempPathFactory, corpora: Path, test_image: str
) -> Iterator[Loop]:
    workdir = tmp_path_factory.mktemp("attempts-loop")
    with running_loop(
        redis_server, workdir, corpora, {".github/trimo.yml": CONFIG + VERIFY}
    ) as loop:
        yield loop


def table(loop: Loop, number: int, marker: str, timeout: float = 150) -> str:
    """The attempts' comment on issue `number` once it shows `marker`."""
    return loop.wait(
        lambda: next(
            (b for b in loop.bot_comments(number) if "attempts" in b and marker in b), None
        ),
        timeout,
        f"the attempts' table on #{number} to show {marker!r}",
    )


def reply(loop: Loop, number: int, marker: str) -> str:
    return loop.wait(
        lambda: next((b for b in loop.bot_comments(number) if marker in b), None),
        60,
        f"a reply saying {marker!r}",
    )


def rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("| ") and "#" in line]


def test_three_attempts_are_ranked_picked_switched_and_followed_up(loop: Loop) -> None:
    number = loop.new_issue("Answer the question")
    loop.comment(number, f"/trimo run --attempts 3 {BY_ATTEMPT}")

    ranked = table(loop, number, "attempts ranked")
    order = rows(ranked)
    assert [row.split("|")[2].strip()[:2] for row in order] == ["#2", "#1", "#3"], ranked
    assert "✅ passed" in order[0] and "❌ checks failed" in order[1]
    assert "agent failed" in order[2]
    assert "said good" in order[0] and "said bad" in order[1]
    assert "/trimo pick N" in ranked
    checks = [c for c in loop.check_runs() if c.name.startswith("Trimo · attempt")]
    assert sorted(c.name for c in checks) == [f"Trimo · attempt {n}" for n in (1, 2, 3)]
    assert all(c.status == "completed" for c in checks)
    branches = loop.branches()
    attempt_branches = sorted(b for b in branches if "-attempt-" in b)
    assert len(attempt_branches) == 2, branches  # attempt 3 made no commit
    pipeline_branch = attempt_branches[0].rsplit("-attempt-", 1)[0]
    assert pipeline_branch not in branches, "nothing is on the pipeline branch before a pick"
    assert loop.state.pulls_for(pipeline_branch) == []

    loop.comment(number, "/trimo pick 3")
    assert "made no commits" in reply(loop, number, "Attempt #3")

    loop.comment(number, "/trimo pick 2")
    kept = reply(loop, number, "Attempt #2 is kept")
    assert f"`{pipeline_branch}`" in kept
    assert loop.file_on(pipeline_branch, "answer.txt") == "good\n"
    pulls = loop.wait(lambda: loop.state.pulls_for(pipeline_branch), 30, "a pull request")
    table(
        loop,
        number,
        f"⭐ **Attempt #2 is kept**, picked by @alice. Its commits are on `{pipeline_branch}`, "
        f"in #{pulls[0].number}.",
    )
    body = loop.wait(
        lambda: next(
            (p.body for p in loop.state.pulls_for(pipeline_branch) if "#2 of 3" in (p.body or "")),
            None,
        ),
        30,
        "the pull request to link the attempts' table",
    )
    assert f"/issues/{number}#issuecomment-" in body and "ranked here" in body

    loop.comment(number, "/trimo pick 1")
    reply(loop, number, "Attempt #1 is kept")
    assert loop.file_on(pipeline_branch, "answer.txt") == "bad\n"
    assert loop.file_on(pipeline_branch, "more.txt") is None
    switched = table(loop, number, "⭐ **Attempt #1 is kept**")
    assert "Switched from attempt #2" in switched

    loop.comment(
        number,
        "/trimo run cp /trimo/context.md seen.md && git add -A && git commit -qm 'Follow up'",
    )
    seen = loop.wait(lambda: loop.file_on(pipeline_branch, "seen.md"), 120, "the follow-up")
    assert loop.file_on(pipeline_branch, "answer.txt") == "bad\n", "it continued from the pick"
    assert "attempt #1 of 3" in seen and "kept by @" in seen
    assert "#2 script (passed)" in seen

    # With a follow-up built on the pick, switching would drop its commit: refused.
    loop.comment(number, "/trimo pick 2")
    assert "would drop them" in reply(loop, number, "switching to #2")
    assert loop.file_on(pipeline_branch, "seen.md") is not None

    # The attempts' branches go TRIMO_ATTEMPTS_KEEP_DAYS after the first pick: a deferred
    # job of the App's queue, brought forward here.
    client = redis.Redis.from_url(loop.redis_url)
    try:
        (job,) = [m for m in client.zrange("trimo:app", 0, -1) if m.startswith(b"clean-attempts:")]
        due = client.zscore("trimo:app", job)
        assert due is not None and due > (time.time() + 6.9 * 24 * 3600) * 1000
        client.zadd("trimo:app", {job: time.time() * 1000})
    finally:
        client.close()
    loop.wait(
        lambda: not [b for b in loop.branches() if b.startswith(f"{pipeline_branch}-attempt-")],
        60,
        "the attempts' branches to be deleted",
    )
    assert loop.file_on(pipeline_branch, "seen.md") is not None, "the pipeline branch stays"
    table(
        loop,
        number,
        "These branches were deleted 7 days after the pick, except any pushed to since.",
    )
    loop.comment(number, "/trimo pick 2")
    assert "can no longer be picked" in reply(loop, number, "Attempt #2's branch was deleted")


def test_one_attempt_per_agent_from_a_comment_is_ranked_by_agent(loop: Loop) -> None:
    """`--agents script,claude`: the base image has no claude, so that attempt fails and
    ranks last; each row and check run names its agent."""
    number = loop.new_issue("Ask two agents")
    loop.comment(
        number,
        "/trimo run --agents script,claude echo good > answer.txt && git add -A "
        "&& git commit -qm Good",
    )
    ranked = table(loop, number, "attempts ranked")
    order = rows(ranked)
    assert [cell.strip() for cell in order[0].split("|")[2:5]] == ["#1", "`script`", "✅ passed"]
    assert [cell.strip() for cell in order[1].split("|")[2:4]] == ["#2", "`claude`"], ranked
    assert "passed" not in order[1], ranked
    names = sorted(
        c.name for c in loop.check_runs() if f"widgets.{number}-" in (c.external_id or "")
    )
    assert names == ["Trimo · attempt 1", "Trimo · attempt 2"], names


def test_stop_on_the_thread_stops_every_attempt(loop: Loop) -> None:
    number = loop.new_issue("Take your time")
    loop.comment(
        number,
        '/trimo run --attempts 2 echo "$TRIMO_BRANCH" > who.txt && git add -A '
        "&& git commit -qm Started && sleep 600",
    )
    loop.wait(
        lambda: (
            len(
                [
                    b
                    for b in loop.branches()
                    if b.startswith(f"trimo/{number}-") and "-attempt-" in b
                ]
            )
            == 2
        ),
        120,
        "both attempts to push their first commit",
    )
    loop.comment(number, "/trimo stop")
    reply(loop, number, "stopping the 2 attempts")
    ranked = table(loop, number, "attempts ranked", timeout=90)
    assert ranked.count("⏹️ stopped") == 2, ranked
    assert [b for b in loop.branches() if "-attempt-" in b and f"trimo/{number}-" in b]

    # Retry runs every attempt again, as a new set numbered after the first.
    loop.comment(number, "/trimo retry")
    again = table(loop, number, "| #4 |", timeout=60)
    assert "| #3 |" in again
    loop.wait(
        lambda: len([c for c in loop.check_runs() if c.name == "Trimo · attempt 4"]) == 1,
        30,
        "attempt 4's check run",
    )
    loop.comment(number, "/trimo stop")
    second = loop.wait(
        lambda: [b for b in loop.bot_comments(number) if "| #4 |" in b and "attempts ranked" in b],
        90,
        "the second set to end",
    )
    assert second[0].count("⏹️ stopped") == 2


def test_more_attempts_than_the_server_allows_are_refused_by_name(loop: Loop) -> None:
    number = loop.new_issue("Too many")
    loop.comment(number, "/trimo run --attempts 5 echo hi")
    refused = reply(loop, number, "TRIMO_POLICY_MAX_ATTEMPTS")
    assert "at most 4 attempts" in refused and "you asked for 5" in refused
    assert not [c for c in loop.check_runs() if f"widgets.{number}-" in (c.external_id or "")]


def test_a_branch_a_person_pushed_to_is_never_overwritten_by_a_pick(
    loop: Loop, tmp_path: Path
) -> None:
    number = loop.new_issue("Build on it")
    loop.comment(number, "/trimo run echo base > base.txt && git add -A && git commit -qm Base")
    branch = loop.wait(
        lambda: next((b for b in loop.branches() if b.startswith(f"trimo/{number}-")), None),
        120,
        "the pipeline branch",
    )
    loop.wait(lambda: loop.file_on(branch, "base.txt"), 60, "the first run's commit")
    loop.comment(
        number,
        "/trimo run --attempts 2 test -f base.txt && git symbolic-ref --short HEAD > who.txt "
        "&& git add -A && git commit -qm Who",
    )
    ranked = table(loop, number, "attempts ranked")
    assert ranked.count("❌ checks failed") == 2, ranked  # verify ran on each: no answer.txt
    work = tmp_path / "person"
    bare = str(loop.gh.fake.bare_path("octo-org", "widgets"))
    subprocess.run(["git", "clone", "-q", "-b", branch, bare, str(work)], check=True)
    (work / "person.txt").write_text("mine\n")
    ident = ["-c", "user.name=Pat", "-c", "user.email=pat@example.com"]
    for args in (["add", "-A"], [*ident, "commit", "-qm", "A person's fix"], ["push", "-q"]):
        subprocess.run(["git", "-C", str(work), *args], check=True)

    loop.comment(number, "/trimo pick 1")
    refused = reply(loop, number, "moved on since the attempts started")
    assert f"`{branch}-attempt-1`" in refused
    assert loop.file_on(branch, "person.txt") == "mine\n"
    assert loop.file_on(branch, "who.txt") is None
    assert loop.file_on(f"{branch}-attempt-1", "who.txt") == f"{branch}-attempt-1\n"


def test_an_attempt_never_continues_a_branch_that_is_not_its_own(loop: Loop) -> None:
    number = loop.new_issue("Stale branches")
    stale = f"{issue_branch('trimo/', number, 'Stale branches')}-attempt-1"
    bare = loop.gh.fake.bare_path("octo-org", "widgets")
    subprocess.run(["git", "-C", str(bare), "branch", stale, "main"], check=True)
    loop.comment(number, "/trimo run --attempts 2 echo x > x.txt && git add -A && git commit -qm X")
    ranked = table(loop, number, "attempts ranked")
    assert "| #2 |" in ranked and "| #3 |" in ranked and "| #1 |" not in ranked
    main = loop.gh.fake.branch_sha("octo-org", "widgets", "main")
    assert loop.gh.fake.branch_sha("octo-org", "widgets", stale) == main, "left as it was"
