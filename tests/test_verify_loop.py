"""Verify through the whole loop (real processes, Redis, Docker and git; GitHub's
stand-in), on a repository with `setup:` and `verify:`: a comment to a green check run
that lists the checks (one needs the setup); failing checks to a failed run, then one
automatic fixing run, announced, and no more."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.loop_harness import CONFIG, Loop, running_loop
from tests.test_end_to_end import branch_of, finished_check

pytestmark = [pytest.mark.docker, pytest.mark.redis]

VERIFY = """\
setup:
  run: mkdir -p deps && echo ready > deps/tool
  cache_key: [README.md]
  paths: [deps]
verify:
  - name: tests
    run: grep -qx hi hello.txt && echo '1 passed'
  - name: lint
    run: test -s hello.txt && grep -qx ready deps/tool
verify_fix_attempts: 1
"""


@pytest.fixture(scope="module")
def loop(
    redis_server: str, tmp_path_factory: pytest.TempPathFactory, corpora: Path, test_image: str
) -> Iterator[Loop]:
    files = {".github/trimo.yml": CONFIG + VERIFY, ".gitignore": "deps/\n"}
    workdir = tmp_path_factory.mktemp("verify-loop")
    with running_loop(redis_server, workdir, corpora, files=files) as loop:
        yield loop


def test_a_comment_ends_in_a_green_check_run_that_lists_the_checks(loop: Loop) -> None:
    number = loop.new_issue("Greet")
    loop.comment(
        number, "/trimo run echo hi > hello.txt && git add hello.txt && git commit -qm 'Say hi'"
    )

    assert finished_check(loop, number) == "success"
    check = loop.check_for(f"widgets.{number}-")
    assert check is not None and check.output["title"].endswith("· verified")
    summary = check.output["summary"]
    assert "all passed" in summary
    assert "| ✅ | `tests` |" in summary and "| ✅ | `lint` |" in summary
    sha = loop.gh.fake.branch_sha("octo-org", "widgets", branch_of(loop, number))
    assert sha is not None and f"**Checks on `{sha[:7]}`**" in summary
    progress = loop.wait(
        lambda: [b for b in loop.bot_comments(number) if "finished after" in b], 30, "final note"
    )
    assert "| ✅ | `tests` |" in progress[0]


def test_failing_checks_fail_the_run_and_start_one_announced_fix(loop: Loop) -> None:
    number = loop.new_issue("Wave")
    loop.comment(
        number, "/trimo run echo bye > hello.txt && git add hello.txt && git commit -qm 'Bye'"
    )

    announced = loop.wait(
        lambda: [b for b in loop.bot_comments(number) if "run to fix them" in b],
        120,
        "the automatic fixing run to be announced",
    )
    assert len(announced) == 1 and "automatic attempt 1 of 1" in announced[0]
    first = min(
        (c for c in loop.check_runs() if f"widgets.{number}-" in (c.external_id or "")),
        key=lambda c: c.id,
    )
    assert first.conclusion == "failure"
    assert "**Why:** `checks failing: tests`" in first.output["summary"]
    assert "| ❌ | `tests` | " in first.output["summary"]
    assert "| ✅ | `lint` |" in first.output["summary"]
    assert loop.file_on(branch_of(loop, number), "hello.txt") == "bye\n", "the work stays"

    # The fixing run (a script agent, given prose) ends; it is the only automatic one.
    assert finished_check(loop, number, timeout=120) == "failure"
    loop.wait(
        lambda: (
            len([c for c in loop.check_runs() if f"widgets.{number}-" in (c.external_id or "")])
            == 2
        ),
        30,
        "two check runs",
    )
    assert len([b for b in loop.bot_comments(number) if "run to fix them" in b]) == 1
