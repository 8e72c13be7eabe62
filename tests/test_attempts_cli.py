"""`trimo run --attempts` and `trimo pick` as a person uses them: the real command, real git,
real Docker, the script agent. Each attempt tells itself apart by its branch's name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import git
from tests.test_cli import trimo
from tests.test_verify_cli import with_config

CONFIG = """\
agent: script
verify:
  - name: tests
    run: grep -qx good result.txt
"""
BY_BRANCH = (
    "n=$(git branch --show-current); case $n in {cases} esac; "
    'git add -A; git commit -qm "work of $n"; '
    "printf 'I am %s \\033]0;pwned\\007 [bold]inert[/bold]\\n' $n"
)
"""A script whose attempts differ: `cases` is a `case` body on the attempt's branch name."""


def table_rows(out: str) -> list[list[str]]:
    """The ranked table's rows (rank first), as words (without the pick's mark)."""
    rows = []
    for line in out.splitlines():
        words = [word for word in line.split() if word != "←"]
        if len(words) > 3 and words[0].isdigit() and words[1].isdigit():
            rows.append(words)
    return rows


@pytest.mark.docker
def test_attempts_are_ranked_then_picked_and_a_follow_up_continues_from_the_pick(
    sample_repo: Path, tmp_path: Path, test_image: str
) -> None:
    with_config(sample_repo, CONFIG)
    cache = tmp_path / "cache"
    start = git(sample_repo, "rev-parse", "main")
    script = BY_BRANCH.format(
        cases="*-1) echo bad > result.txt;; *-2) echo good > result.txt;; *) exit 7;;"
    )
    ran = trimo(
        "run", "--repo", str(sample_repo), "--pipeline", "p", "--attempts", "3", script,
        cache=cache, env={"TRIMO_NETWORK": "none"},
    )  # fmt: skip
    out = ran.stdout
    assert ran.returncode == 0, out + ran.stderr
    assert "2│▶ script started in trimo-agent:base on trimo/p-attempt-2" in out
    assert "1│⬆ pushed 1 commit to trimo/p-attempt-1" in out
    rows = table_rows(out)
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        ("1", "2", "script", "passed"),
        ("2", "1", "script", "failed"),
        ("3", "3", "script", "failure"),  # crashed: ranked, last
    ]
    assert rows[0][4:6] == ["1✓", "0✗"] and rows[1][4:6] == ["0✓", "1✗"]
    assert re.search(r"2│  I am trimo/p-attempt-2 +\[bold\]inert\[/bold\]\n", out), out
    assert re.search(r"passed .* I am trimo/p-attempt-2 +\[bold\]inert\[/bold\]\n", out), out
    assert "\x1b" not in out + ran.stderr and "pwned" not in out
    assert "3 trimo/p-attempt-3  0 commit(s): the agent exited with code 7" in out
    assert "Keep one: trimo pick p 2" in out
    for number in (1, 2):
        assert git(sample_repo, "rev-parse", f"trimo/p-attempt-{number}~1") == start
    assert git(sample_repo, "rev-parse", "trimo/p") == start, "nothing is kept before a pick"

    first = trimo("pick", "p", "1", "--repo", str(sample_repo), cache=cache)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "a fast-forward from" in first.stdout
    assert git(sample_repo, "show", "trimo/p:result.txt") == "bad"
    second = trimo("pick", "p", "2", "--repo", str(sample_repo), cache=cache)
    assert second.returncode == 0, second.stdout + second.stderr
    said = " ".join(second.stdout.split())
    assert "reset from attempt 1's head" in said and "TRIMO_ATTEMPTS_KEEP_DAYS (7)" in said
    assert "Attempt 1's commits stay on trimo/p-attempt-1" in said
    assert git(sample_repo, "rev-parse", "trimo/p") == git(
        sample_repo, "rev-parse", "trimo/p-attempt-2"
    )
    nothing = trimo("pick", "p", "3", "--repo", str(sample_repo), cache=cache)
    assert nothing.returncode == 1 and "Attempt 3 made no commits" in nothing.stderr

    follow = trimo(
        "run", "--repo", str(sample_repo), "--pipeline", "p",
        "grep -qx good result.txt && echo more >> result.txt && git commit -qam More",
        cache=cache, env={"TRIMO_NETWORK": "none"},
    )  # fmt: skip
    assert follow.returncode == 0, follow.stdout + follow.stderr
    assert git(sample_repo, "show", "trimo/p:result.txt") == "good\nmore"
    assert git(sample_repo, "rev-parse", "trimo/p~1") == git(
        sample_repo, "rev-parse", "trimo/p-attempt-2"
    )
    late = trimo("pick", "p", "1", "--repo", str(sample_repo), cache=cache)
    assert late.returncode == 1 and "has moved on since these attempts started" in late.stderr
    listing = trimo("pipelines", "--repo", str(sample_repo), cache=cache)
    assert "attempts 1–3: 2 passed, 1 failed, 3 failure; kept 2" in listing.stdout


@pytest.mark.docker
def test_agents_and_auto_pick_keep_only_a_passing_attempt(
    sample_repo: Path, tmp_path: Path, test_image: str
) -> None:
    """One attempt per agent: the base image has no claude, so that attempt crashes and
    ranks last; auto keeps the script's, which passed. A later set on the same pipeline
    counts on (3, 4), and auto keeps none when the best did not pass."""
    with_config(sample_repo, CONFIG)
    cache = tmp_path / "cache"
    env = {"TRIMO_NETWORK": "none"}
    good = "echo good > result.txt && git add -A && git commit -qm Good"
    ran = trimo(
        "run", "--repo", str(sample_repo), "--pipeline", "q", "--agents", "script,claude",
        "--pick", "auto", good, cache=cache, env=env,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
    rows = table_rows(ran.stdout)
    assert [(r[1], r[2], r[3]) for r in rows] == [
        ("1", "script", "passed"),
        ("2", "claude", "failure"),
    ]
    assert "   1 ←   script   passed" in ran.stdout
    assert "pick: auto, ranked first with its checks passed" in " ".join(ran.stdout.split())
    kept = git(sample_repo, "rev-parse", "trimo/q")
    assert kept == git(sample_repo, "rev-parse", "trimo/q-attempt-1")

    script = BY_BRANCH.format(cases="*-3) echo bad > result.txt;; *) sleep 120;;")
    again = trimo(
        "run", "--repo", str(sample_repo), "--pipeline", "q", "--attempts", "2",
        "--pick", "auto", "--timeout", "0.2", script, cache=cache, env=env,
    )  # fmt: skip
    assert again.returncode == 1, again.stdout + again.stderr
    rows = table_rows(again.stdout)
    assert [(r[1], r[3]) for r in rows] == [("3", "failed"), ("4", "timed_out")]
    assert "pick: auto kept none" in again.stdout
    assert git(sample_repo, "rev-parse", "trimo/q") == kept, "a failing attempt is not kept"
    assert git(sample_repo, "rev-parse", "trimo/q-attempt-3~1") == kept
