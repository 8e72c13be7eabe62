"""A run's budget (`max_cost_usd`) with the real engine, real Docker and real git: the
script agent reports its cost as it goes, as an agent's stream does, and the runner stops
it once the cost reaches the budget, saving its work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.agents.claude import ClaudeAdapter
from runner.attempt import budget_reason
from runner.job import Outcome
from tests.conftest import git
from tests.engine_helpers import make_request, run

pytestmark = pytest.mark.docker


def _line(**event: object) -> str:
    return "echo " + "'" + json.dumps(event) + "'"


SPENDER = "; ".join(
    [
        "echo done-before > work.txt",
        _line(type="usage", input_tokens=1000, output_tokens=100, cost_usd=0.30),
        _line(type="tool_call", name="Bash", summary="first"),
        _line(type="usage", input_tokens=800, output_tokens=90, cost_usd=0.25),
        _line(type="tool_call", name="Bash", summary="next"),
        "sleep 300",  # what the run would go on spending: it never gets here
        "echo never > more.txt",
        _line(type="tool_call", name="Bash", summary="never"),
    ]
)


def test_a_run_that_reaches_its_budget_is_stopped_and_its_work_saved(
    sample_repo: Path, cache: Path
) -> None:
    request = make_request(sample_repo, SPENDER, timeout_s=600, max_cost_usd=0.5)
    finished, events = run(cache, request)

    assert finished.outcome is Outcome.CANCELLED
    assert finished.reason == "budget: $0.55 of $0.50"
    assert finished.usage is not None and finished.usage.cost_usd == pytest.approx(0.55)
    calls = [getattr(e, "summary", "") for e in events.of_type("tool_call")]
    assert calls == ["first", "next"]  # stopped within the tool call that was going
    assert git(sample_repo, "show", "trimo/p1:work.txt") == "done-before"
    assert "more.txt" not in git(sample_repo, "ls-tree", "--name-only", "trimo/p1")


def test_a_run_whose_budget_is_what_a_monthly_cap_left_names_that_cap(
    sample_repo: Path, cache: Path
) -> None:
    """The budget the App gave the run from what was left of the repository's monthly cap
    (0.50 left): the stop names the cap, so nobody takes it for the run's own budget."""
    cap = "monthly cap of octo-org/widgets"
    request = make_request(sample_repo, SPENDER, timeout_s=600, max_cost_usd=0.5, budget_cap=cap)
    finished, _ = run(cache, request)

    assert finished.outcome is Outcome.CANCELLED
    assert finished.reason == f"budget: $0.55 of $0.50 ({cap})"
    assert git(sample_repo, "show", "trimo/p1:work.txt") == "done-before"


@pytest.mark.parametrize(
    ("cap", "shown", "reason"),
    [
        (None, True, "budget: $0.55 of $0.50"),
        ("monthly cap of o/r", True, "budget: $0.55 of $0.50 (monthly cap of o/r)"),
        # What was left of a person's cap tells their spend elsewhere: never printed.
        ("monthly cap per person of @al", False, "budget: $0.55 (monthly cap per person of @al)"),
    ],
)
def test_budget_reason(cap: str | None, shown: bool, reason: str) -> None:
    assert budget_reason(0.55, 0.5, cap, shown=shown) == reason


def test_a_run_within_its_budget_goes_to_its_end(sample_repo: Path, cache: Path) -> None:
    script = "; ".join(
        ["echo ok > ok.txt", _line(type="usage", cost_usd=0.30), _line(type="usage", cost_usd=0.1)]
    )
    finished, _ = run(cache, make_request(sample_repo, script, max_cost_usd=0.5))

    assert finished.outcome is Outcome.SUCCESS, finished.reason
    assert git(sample_repo, "show", "trimo/p1:ok.txt") == "ok"


def test_claude_is_given_the_budget_on_top_of_what_its_session_had_cost() -> None:
    adapter = ClaudeAdapter()
    assert "--max-budget-usd" not in adapter.command("hi", resume=False)
    adapter.max_cost_usd, adapter.session_cost_before = 0.5, 1.25
    argv = adapter.command("hi", resume=True)
    assert argv[argv.index("--max-budget-usd") + 1] == "1.7500"
    assert argv[-2:] == ["--", "hi"]
