"""`trimo run --attempts` and `trimo pick` refuse bad input clearly; the pure parts of local
attempts (planning, evidence, the repository's settings) and the pick's keep window, on real
git without Docker."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rich.console import Console

from runner.attemptconfig import read_attempts_config
from runner.attemptview import Progress, ranking_table, reason_lines
from runner.errors import TrimoError
from runner.job import (
    CheckResult,
    Outcome,
    RunFinished,
    RunRecord,
    RunStarted,
    Verifying,
    VerifyReport,
)
from runner.localattempts import Ended, plan_agents, result_of
from runner.localpick import clean, pick
from runner.localstate import AttemptSet, LocalAttempt, LocalPipeline, name_from_prompt
from runner.ranking import AttemptResult
from tests.conftest import git
from tests.test_cli import trimo


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["--attempts", "5"], {}, "5 attempts is more than this machine's cap of 4 attempts"),
        (
            ["--agents", "script,claude", "--attempts", "2"],
            {"TRIMO_POLICY_MAX_ATTEMPTS": "3"},
            "4 attempts (2 agents × 2) is more than this machine's cap of 3",
        ),
        (["--agents", "script,,claude"], {}, "has an empty name"),
        (["--agents", "script,nope"], {}, "unknown agent 'nope'"),
        (["--agent", "script", "--agents", "script,claude"], {}, "give one of them"),
        (["--attempts", "0"], {}, "--attempts 0 is not a number of attempts"),
        (["--pick", "auto"], {}, "--pick picks among attempts, and this run is one"),
        (["--attempts", "2", "--pick", "best"], {}, "--pick 'best' is not a way to pick"),
        (["--attempts", "2", "--discover"], {}, "--discover runs once"),
        (["--pipeline", "x-attempt-2"], {}, "how an attempt of another pipeline is named"),
    ],
)
def test_bad_attempts_input_is_refused_clearly(
    sample_repo: Path, tmp_path: Path, args: list[str], env: dict[str, str], says: str
) -> None:
    result = trimo("run", "--repo", str(sample_repo), *args, "x", cache=tmp_path / "c", env=env)
    assert result.returncode == 1
    assert says in " ".join(result.stderr.split())
    assert "Traceback" not in result.stdout + result.stderr
    assert not re.search(r"trimo/.*-attempt-", git(sample_repo, "branch", "--list"))


def test_picking_what_is_not_there_is_refused_clearly(sample_repo: Path, tmp_path: Path) -> None:
    missing = trimo("pick", "nope", "1", "--repo", str(sample_repo), cache=tmp_path / "c")
    assert missing.returncode == 1 and "There is no pipeline 'nope'" in missing.stderr
    bad = trimo("pick", "p", "two", "--repo", str(sample_repo), cache=tmp_path / "c")
    assert bad.returncode == 2 and "Traceback" not in bad.stdout + bad.stderr


@pytest.mark.parametrize(
    ("attempts", "agents", "configured", "planned"),
    [
        (None, [], 1, ["script"]),
        (None, [], 3, ["script"] * 3),
        (2, [], 3, ["script"] * 2),
        (None, ["claude", "codex"], 3, ["claude", "codex"]),
        (2, ["claude", "codex"], 1, ["claude", "claude", "codex", "codex"]),
    ],
)
def test_plan_agents(
    attempts: int | None, agents: list[str], configured: int, planned: list[str]
) -> None:
    assert plan_agents(attempts, agents, "script", configured, 4) == planned


def test_the_cap_counts_every_attempt() -> None:
    with pytest.raises(TrimoError) as caught:
        plan_agents(None, [], "script", 5, 4)
    assert "5 attempts is more than this machine's cap of 4" in caught.value.message


def test_result_of_reads_the_evidence() -> None:
    report = VerifyReport(sha="a" * 40, checks=[CheckResult(name="tests", passed=False)])
    end = RunFinished(
        run_id="r", outcome=Outcome.FAILURE, reason="checks failing: tests", verify=report
    )
    result = result_of(Ended(3, end, 12.34), "codex")
    assert (result.number, result.agent, result.standing) == (3, "codex", "failure")
    assert (result.verified, result.checks_passed, result.checks_failed) == (False, 0, 1)
    assert result.seconds == 12.3


def test_the_repositorys_attempts_settings() -> None:
    config = read_attempts_config("attempts: 3\npick: auto\nrank_by: [cost, verify]\n", "here")
    assert (config.attempts, config.pick, config.rank_by) == (3, "auto", ("cost", "verify"))
    assert read_attempts_config("agent: claude\n", "here").rank_by[0] == "verify"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("rank_by: [speed]", "unknown ranking key 'speed'"),
        ("rank_by: [cost, cost]", "ranking key 'cost' is given twice"),
        ("rank_by: []", "should be a list of keys"),
        ("pick: maybe", "pick:"),
        ("attempts: 0", "attempts:"),
        ("attempts: '3'", "attempts:"),
    ],
)
def test_bad_attempts_settings_are_refused_clearly(text: str, says: str) -> None:
    with pytest.raises(TrimoError) as caught:
        read_attempts_config(text, ".github/trimo.yml on main")
    message = caught.value.message.replace(".github/trimo.yml on main has a problem", "")
    assert says.rstrip(":") in message
    assert "attempts settings" in caught.value.message


def test_a_prompt_never_names_a_pipeline_like_an_attempt() -> None:
    assert name_from_prompt("Retry attempt 2") == "retry-attempt-2-run"


def one_set(repo: Path) -> LocalPipeline:
    """Pipeline p in `repo`: its branch at main, and attempts 1 and 2 a commit each on it."""
    start = git(repo, "rev-parse", "main")
    git(repo, "branch", "trimo/p", start)
    attempts = []
    for number in (1, 2):
        branch = f"trimo/p-attempt-{number}"
        git(repo, "switch", "-q", "-c", branch, start)
        (repo / "n.txt").write_text(f"{number}\n")
        git(repo, "add", "n.txt")
        git(repo, "commit", "-qm", f"Attempt {number}")
        head = git(repo, "rev-parse", "HEAD")
        result = AttemptResult(
            number=number, agent="script", outcome=Outcome.SUCCESS, commits=1, head_sha=head
        )
        run = RunRecord(run_id=f"p-a{number}", prompt="x", agent="script", outcome=Outcome.SUCCESS)
        attempts.append(LocalAttempt(number=number, branch=branch, run=run, result=result))
    git(repo, "switch", "-q", "main")
    started = datetime(2026, 1, 1, tzinfo=UTC)
    found = AttemptSet(start_sha=start, started_at=started, attempts=attempts)
    return LocalPipeline(
        name="p", branch="trimo/p", base_branch="main", attempts_started=2, attempt_sets=[found]
    )


def test_a_switch_is_refused_after_the_keep_window_which_then_deletes_the_branches(
    sample_repo: Path,
) -> None:
    pipeline = one_set(sample_repo)
    picked_at = datetime(2026, 1, 2, tzinfo=UTC)
    pick(sample_repo, pipeline, 1, 7, picked_at, "picked by hand")
    assert git(sample_repo, "show", "trimo/p:n.txt") == "1"
    assert [r.run_id for r in pipeline.runs] == ["p-a1"]
    assert pipeline.runs[0].attempts == (
        "This was attempt #1 of 2 of the same prompt, ranked by verify, failing checks, diff, "
        "cost: #1 script (done), #2 script (done). It was kept: picked by hand; the others' "
        "commits are not on this branch."
    )

    later = picked_at + timedelta(days=8)
    with pytest.raises(TrimoError) as caught:
        pick(sample_repo, pipeline, 2, 7, later, "picked by hand")
    assert "picked 8.0 days ago, longer than TRIMO_ATTEMPTS_KEEP_DAYS (7)" in caught.value.message
    assert git(sample_repo, "show", "trimo/p:n.txt") == "1"

    git(sample_repo, "switch", "-q", "trimo/p-attempt-2")
    git(sample_repo, "commit", "-q", "--allow-empty", "-m", "The person's own")
    git(sample_repo, "switch", "-q", "main")
    assert clean(sample_repo, pipeline, 7, picked_at + timedelta(days=6)) == []
    said = clean(sample_repo, pipeline, 7, later)
    assert said == [
        "deleted trimo/p-attempt-1 (picked: attempt 1)",
        "kept trimo/p-attempt-2: it has moved since its attempt ended",
    ]
    assert git(sample_repo, "branch", "--list", "trimo/p-attempt-1") == ""
    with pytest.raises(TrimoError) as caught:
        pick(sample_repo, pipeline, 2, 7, later, "picked by hand")
    assert "Attempt 2's branch is gone" in caught.value.message


def test_a_pick_never_moves_a_checked_out_branch(sample_repo: Path) -> None:
    pipeline = one_set(sample_repo)
    git(sample_repo, "switch", "-q", "trimo/p")
    with pytest.raises(TrimoError) as caught:
        pick(sample_repo, pipeline, 2, 7, datetime.now(UTC), "picked by hand")
    assert "trimo/p is checked out" in caught.value.message
    assert git(sample_repo, "rev-parse", "trimo/p") == git(sample_repo, "rev-parse", "main")
    assert not re.search("n.txt", git(sample_repo, "status", "--short"))


def test_the_table_prints_agent_text_inert() -> None:
    """An attempt's last word and reason are the agent's text: escape sequences in them
    would retitle the terminal, move the cursor or recolour it (rich prints them as is)."""
    hostile = "\x1b]0;pwned\x07[bold]x[/bold]\x1b[31mred\x9b2J"
    result = AttemptResult(
        number=1, agent="script", outcome=Outcome.FAILURE, reason=hostile, last_word=hostile
    )
    buffer = io.StringIO()
    console = Console(file=buffer, width=200, force_terminal=False)
    console.print(ranking_table([result]))
    for line in reason_lines([result], {1: "trimo/p-attempt-1"}):
        console.print(line)
    printed = buffer.getvalue()
    assert "\x1b" not in printed and "\x9b" not in printed and "pwned" not in printed
    assert printed.count("[bold]x[/bold]red") == 2


def test_the_status_line_says_where_each_attempt_is() -> None:
    progress = Progress({1: "claude", 2: "codex", 3: "script"})
    progress.saw(1, RunStarted(run_id="r1", runner="x", agent="claude", image="i", branch="b",
                               base_sha="a" * 40))  # fmt: skip
    progress.saw(2, Verifying(sha="a" * 40, checks=["tests"]))
    failing = VerifyReport(sha="a" * 40, checks=[CheckResult(name="tests", passed=False)])
    progress.saw(3, RunFinished(run_id="r3", outcome=Outcome.FAILURE, verify=failing))
    assert progress.line(12.4) == (
        "attempts 12s: 1 claude running · 2 codex checking · 3 script failure (checks failing)"
        "  (Ctrl-C stops all and saves)"
    )
