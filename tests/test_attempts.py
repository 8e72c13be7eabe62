"""Asking for attempts and showing them: commands, `.github/trimo.yml`, the server's cap,
the table people read (hostile last words included) and the branch naming."""

from __future__ import annotations

from typing import Any

import pytest

from app.conversation.commands import PickCommand, Reply, RunCommand, parse_comment
from app.conversation.naming import attempt_branch
from app.conversation.policy import RunSettings, ServerPolicy, attempts_refusal, planned_agents
from app.conversation.repoconfig import ConfigError, RepoConfig, parse_repo_config
from app.reporting import attemptsview
from app.runs.pipelines import AttemptSet, Pipeline, PipelineRun
from runner.contract import attempt_pipeline
from runner.diffsummary import DiffSummary, FileChange
from runner.events import Usage
from runner.job import CheckResult, CommitInfo, Outcome, Resources, VerifyReport, is_valid_name

SETTINGS = RunSettings(
    agent="script", image="i", label="default", timeout_minutes=1, network="none",
    resources=Resources(),
)  # fmt: skip


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("/trimo run --attempts 3 fix it", RunCommand("fix it", attempts=3)),
        (
            "/trimo run --agents claude,codex fix it",
            RunCommand("fix it", agents=("claude", "codex")),
        ),
        (
            "/trimo run --agents=Claude,aider --attempts=2 go",
            RunCommand("go", agents=("claude", "aider"), attempts=2),
        ),
        ("/trimo pick 2", PickCommand(2)),
        ("/trimo pick #12", PickCommand(12)),
    ],
)
def test_attempt_commands(body: str, expected: object) -> None:
    assert parse_comment(body, "trimo") == expected


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("/trimo run --attempts 0 x", "from 1 to 16"),
        ("/trimo run --attempts 17 x", "from 1 to 16"),
        ("/trimo run --attempts lots x", "`lots`"),
        ("/trimo run --agents claude,claude x", "names an agent twice"),
        ("/trimo run --agents , x", "agent names separated by commas"),
        ("/trimo run --agents Bad! x", "is not an agent name"),
        ("/trimo run --agent claude --agents codex x", "not both"),
        ("/trimo discover --attempts 2", "Attempts are for coding runs"),
        ("/trimo pick", "the number of one attempt"),
        ("/trimo pick two", "`two`"),
        ("/trimo pick 1 2", "`1 2`"),
    ],
)
def test_bad_attempt_commands_get_a_clear_answer(body: str, says: str) -> None:
    parsed = parse_comment(body, "trimo")
    assert isinstance(parsed, Reply) and says in parsed.text


def test_planned_agents_from_the_command_then_the_config() -> None:
    config = RepoConfig(agent="claude", attempts=2)
    assert planned_agents(config, RunCommand("x")) == ["claude", "claude"]
    assert planned_agents(config, RunCommand("x", attempts=1)) == ["claude"]
    assert planned_agents(config, RunCommand("x", agent="codex", attempts=3)) == ["codex"] * 3
    assert planned_agents(config, RunCommand("x", agents=("codex", "aider"))) == [
        "codex", "aider",
    ]  # fmt: skip
    assert planned_agents(config, RunCommand("x", agents=("codex", "aider"), attempts=2)) == [
        "codex", "codex", "aider", "aider",
    ]  # fmt: skip
    assert planned_agents(config, RunCommand("", mode="discover")) == ["claude"]


def test_the_cap_is_named_and_says_who_asked() -> None:
    policy = ServerPolicy(max_attempts=3)
    assert attempts_refusal(3, policy, from_config=False) is None
    asked = attempts_refusal(4, policy, from_config=False)
    assert asked is not None and "at most 3 attempts" in asked.message
    assert "`TRIMO_POLICY_MAX_ATTEMPTS`" in asked.message and "you asked for 4" in asked.message
    configured = attempts_refusal(5, policy, from_config=True)
    assert configured is not None and "`.github/trimo.yml` asks for 5" in configured.message


def test_attempts_pick_and_rank_by_in_the_repository_config() -> None:
    config = parse_repo_config("attempts: 3\npick: auto\nrank_by: [diff, verify]\n")
    assert isinstance(config, RepoConfig)
    assert (config.attempts, config.pick, config.rank_by) == (3, "auto", ["diff", "verify"])
    assert parse_repo_config("rank_by: cost\n").rank_by == ["cost"]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("attempts: 0", "`attempts` should be greater than or equal to 1"),
        ("attempts: 99", "`attempts` should be less than or equal to 16"),
        ("attempts: '2'", "`attempts` should be a whole number"),
        ("pick: best", "`pick` should be 'manual' or 'auto'"),
        ("rank_by: [speed]", "unknown ranking key 'speed'"),
        ("rank_by: [diff, diff]", "given twice"),
        ("rank_by: []", "`rank_by` list should have at least 1 item"),
    ],
)
def test_bad_attempt_settings_are_named(text: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_repo_config(text)
    assert says in caught.value.message


def test_attempt_branches_and_runner_names_are_valid_beside_the_pipeline() -> None:
    assert attempt_branch("trimo/7-fix-it", 2) == "trimo/7-fix-it-attempt-2"
    long_id = "o." + "r" * 97
    name = attempt_pipeline(long_id, 12)
    assert name.endswith(".a12") and len(name) == 100 and is_valid_name(name)
    assert is_valid_name(attempt_pipeline("o.r.7.", 1))  # never `..`


HOSTILE = "done | <script>alert(1)</script> @everyone ``` [x](javascript:alert(1))\n" + "z" * 900


def _finished(run_id: str, attempt: int, **fields: Any) -> PipelineRun:
    values: dict[str, Any] = {
        "run_id": run_id, "prompt": "fix | it", "settings": SETTINGS, "requested_by": "mona",
        "thread": 7, "status": "finished", "started": True, "outcome": Outcome.SUCCESS,
        "attempt": attempt, "attempt_set": "r1", "branch": f"trimo/7-x-attempt-{attempt}",
        **fields,
    }  # fmt: skip
    return PipelineRun.model_validate(values)


def _pipeline() -> Pipeline:
    passing = VerifyReport(sha="a" * 40, checks=[CheckResult(name="tests", passed=True)])
    failing = VerifyReport(sha="b" * 40, checks=[CheckResult(name="tests", passed=False)])
    runs = [
        _finished(
            "r1", 1, outcome=Outcome.FAILURE, verify=failing, last_word=HOSTILE,
            commits=[CommitInfo(sha="b" * 40, subject="b")],
            diff=DiffSummary(files=[FileChange(path="f", added=1)]),
        ),
        _finished(
            "r2", 2, verify=passing, commits=[CommitInfo(sha="a" * 40, subject="a")],
            diff=DiffSummary(files=[FileChange(path="f", added=30, removed=2)]),
            usage=Usage(cost_usd=0.25, input_tokens=1200, output_tokens=300),
        ),
        _finished("r3", 3, outcome=Outcome.TIMED_OUT, reason="timed out after 1 minute"),
    ]  # fmt: skip
    return Pipeline(
        id="o.r.7", repo="o/r", number=7, kind="issue", branch="trimo/7-x", base_branch="main",
        clone_url="x", installation_id=1, runs=runs,
        attempt_sets=[AttemptSet(id="r1", runs=["r1", "r2", "r3"], comment_id=5)],
    )  # fmt: skip


def test_the_table_ranks_on_evidence_and_keeps_hostile_words_literal() -> None:
    pipeline = _pipeline()
    table = attemptsview.rows(pipeline, pipeline.attempt_sets[0])
    assert [(row.place, row.number) for row in table] == [(1, 2), (2, 1), (3, 3)]
    text = attemptsview.comment(
        pipeline, pipeline.attempt_sets[0], keep_days=7, dashboard_url="https://trimo.example.com"
    )
    assert "### 🏁 3 attempts ranked" in text
    lines = [line for line in text.splitlines() if line.startswith("| ") and "#" in line]
    assert lines[0].startswith("| 1 | #2 | `script` | ✅ passed | 1/1 | 1 file, 32 lines | $0.25")
    assert "1.5k" in lines[0]
    assert lines[1].startswith("| 2 | #1 | `script` | ❌ checks failed | 0/1")
    assert "⏱️ timed out" in lines[2] and "`timed out after 1 minute`" in lines[2]
    # The hostile last word stays one literal cell: no new column, tag, mention or link.
    assert lines[1].count(" | ") == lines[0].count(" | ")
    assert "| ````done \\| <script>alert(1)</script> @everyone ``` [x](javascript:" in lines[1]
    assert "\\|" in lines[1] and "z" * 300 not in text
    assert "Total cost: $0.25" in text
    assert "(https://trimo.example.com/pipelines/o.r.7)" in text


def test_the_table_says_who_kept_which_and_the_switch_reason() -> None:
    pipeline = _pipeline()
    attempt_set = pipeline.attempt_sets[0]
    attempt_set.picked, attempt_set.picked_by = 2, "auto"
    text = attemptsview.comment(pipeline, attempt_set, keep_days=7, pull=9)
    assert "| 1 | #2 ⭐ |" in text
    assert "it ranked first and passed verification (`pick: auto`)" in text
    assert "Its commits are on `trimo/7-x`, in #9." in text
    assert "switches to another attempt for 7 days" in text
    attempt_set.picked, attempt_set.picked_by = 1, "octocat"
    attempt_set.pick_note = "Switched from attempt #2 by @octocat."
    text = attemptsview.comment(pipeline, attempt_set, keep_days=7)
    assert "picked by @octocat" in text and "Switched from attempt #2" in text


def test_a_table_while_attempts_run_is_in_number_order_and_not_ranked() -> None:
    pipeline = _pipeline()
    running = pipeline.find("r1")
    assert running is not None
    running.status, running.outcome = "running", None
    text = attemptsview.comment(pipeline, pipeline.attempt_sets[0], keep_days=7)
    assert "### ⏳ 3 attempts running" in text and "| Rank |" not in text
    assert [row.number for row in attemptsview.rows(pipeline, pipeline.attempt_sets[0])] == [
        1, 2, 3,
    ]  # fmt: skip
    assert "⏳ running" in text
