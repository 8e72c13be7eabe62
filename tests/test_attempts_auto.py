"""`attempts: 2` and `pick: auto` in `.github/trimo.yml`, on two runners of one slot each:
a plain `/trimo run` becomes two attempts spread over both runners, and only an attempt that
passed verification is kept automatically (real processes, Redis, Docker, git; GitHub's
stand-in)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from runner import contract
from tests.conftest import unique
from tests.fakegithub import RunningFakeGitHub
from tests.loop_harness import CONFIG, Loop
from tests.test_attempts_loop import reply, table

pytestmark = [pytest.mark.docker, pytest.mark.redis]

AUTO = """\
attempts: 2
pick: auto
verify:
  - name: answer
    run: grep -qx good answer.txt
"""


@pytest.fixture(scope="module")
def loop(
    redis_server: str, tmp_path_factory: pytest.TempPathFactory, corpora: Path, test_image: str
) -> Iterator[Loop]:
    workdir = tmp_path_factory.mktemp("attempts-auto")
    with RunningFakeGitHub() as gh:
        harness = Loop(
            gh,
            redis_server,
            workdir,
            corpora,
            files={".github/trimo.yml": CONFIG + AUTO},
            env={"TRIMO_RUNNER_CONCURRENCY": "1"},
        ).start()
        second: subprocess.Popen[bytes] | None = None
        try:
            second_id = unique("runner-b")
            second = harness._spawn(
                "runner",
                "runner-b",
                TRIMO_RUNNER_ID=second_id,
                TRIMO_CACHE_DIR=str(workdir / "cache-b"),
            )
            client = redis.Redis.from_url(redis_server)
            try:
                harness.wait(
                    lambda: client.exists(contract.runner_info(second_id)),
                    60,
                    "the second runner to announce",
                )
            finally:
                client.close()
            yield harness
        finally:
            if second is not None and second.poll() is None:
                second.terminate()
                try:
                    second.wait(60)
                except subprocess.TimeoutExpired:
                    second.kill()
            harness.stop()
            assert gh.state.violations == [], gh.state.violations


def runners_of(loop: Loop, number: int) -> set[str]:
    client = redis.Redis.from_url(loop.redis_url)
    try:
        raw = client.get(f"trimo:pipeline:octo-org.widgets.{number}")
    finally:
        client.close()
    assert raw is not None
    return {run["runner"] for run in json.loads(raw)["runs"] if run.get("attempt")}


def test_the_passing_attempt_is_kept_and_the_attempts_ran_on_both_runners(loop: Loop) -> None:
    number = loop.new_issue("Answer well")
    loop.comment(
        number,
        '/trimo run case "$(git symbolic-ref --short HEAD)" in *-attempt-2) echo good;; '
        "*) echo bad;; esac > answer.txt && sleep 3 && git add -A && git commit -qm Answer",
    )
    kept = table(loop, number, "⭐ **Attempt #2 is kept**: it ranked first", timeout=180)
    assert "(`pick: auto`)" in kept
    branch = kept.split("Its commits are on `", 1)[1].split("`", 1)[0]
    assert loop.file_on(branch, "answer.txt") == "good\n"
    assert loop.wait(lambda: loop.state.pulls_for(branch), 30, "the pull request")
    assert len(runners_of(loop, number)) == 2, "each runner has one slot: both took one"


def test_nothing_is_kept_automatically_when_no_attempt_passed(loop: Loop) -> None:
    number = loop.new_issue("Answer badly")
    loop.comment(number, "/trimo run echo bad > answer.txt && git add -A && git commit -qm Bad")
    ranked = table(loop, number, "attempts ranked", timeout=180)
    assert "No attempt passed verification, so none was kept automatically." in ranked
    assert "⭐" not in ranked
    assert not any(
        b.startswith(f"trimo/{number}-") and "-attempt-" not in b for b in loop.branches()
    ), "the pipeline branch was not made"
    loop.comment(number, "/trimo pick 1")
    assert "Attempt #1 is kept" in reply(loop, number, "Attempt #1 is kept")
