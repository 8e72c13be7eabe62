"""Ranking attempts: evidence first, then the smaller change, then cost."""

from __future__ import annotations

import pytest

from runner.job import Outcome
from runner.ranking import (
    DEFAULT_RANK_BY,
    AttemptResult,
    auto_pick,
    cut_short,
    parse_rank_by,
    rank,
)


def attempt(number: int, **fields: object) -> AttemptResult:
    base: dict[str, object] = {
        "agent": "script",
        "outcome": Outcome.SUCCESS,
        "commits": 1,
        "lines_changed": 10,
    }
    return AttemptResult.model_validate({"number": number, **base, **fields})


def numbers(results: list[AttemptResult]) -> list[int]:
    return [r.number for r in results]


def test_verify_passed_beats_a_smaller_cheaper_diff() -> None:
    ranked = rank(
        [
            attempt(1, verified=False, checks_failed=1, lines_changed=2, cost_usd=0.1),
            attempt(2, verified=True, lines_changed=300, cost_usd=3.0),
            attempt(3, verified=None, lines_changed=1),
        ]
    )
    assert numbers(ranked) == [2, 3, 1]


def test_an_attempt_whose_checks_failed_is_ranked_on_them_not_dropped() -> None:
    # The engine ends a run whose verify failed as a failure: it still did work.
    checked = attempt(1, outcome=Outcome.FAILURE, verified=False, checks_failed=1)
    crashed = attempt(2, outcome=Outcome.FAILURE, lines_changed=1)  # no verify evidence
    clean = attempt(3, verified=False, checks_failed=2)
    assert numbers(rank([crashed, clean, checked])) == [1, 3, 2]
    assert [r.standing for r in rank([crashed, checked])] == ["failed", "failure"]


def test_fewer_failing_checks_then_smaller_diff_then_cost() -> None:
    ranked = rank(
        [
            attempt(1, verified=False, checks_failed=2, lines_changed=1),
            attempt(2, verified=False, checks_failed=1, lines_changed=50, cost_usd=0.5),
            attempt(3, verified=False, checks_failed=1, lines_changed=50, cost_usd=0.2),
            attempt(4, verified=False, checks_failed=1, lines_changed=40, cost_usd=9.0),
        ]
    )
    assert numbers(ranked) == [4, 3, 2, 1]


def test_failed_timed_out_crashed_or_empty_attempts_rank_last_whatever_the_order() -> None:
    ranked = rank(
        [
            attempt(1, outcome=Outcome.TIMED_OUT, lines_changed=1, verified=True),
            attempt(2, outcome=Outcome.ERROR, commits=0, lines_changed=0),
            attempt(3, verified=False, checks_failed=3, lines_changed=900),
            attempt(4, commits=0, lines_changed=0),
        ],
        ("diff",),
    )
    assert numbers(ranked) == [3, 1, 2, 4]
    assert [r.standing for r in ranked] == ["failed", "timed_out", "error", "no change"]
    assert attempt(5, outcome=None).standing == "running"


def test_unknown_cost_ranks_after_known_cost_and_ties_go_to_the_lower_number() -> None:
    ranked = rank([attempt(1), attempt(2, cost_usd=1.0), attempt(3, cost_usd=1.0)], ("cost",))
    assert numbers(ranked) == [2, 3, 1]


def test_a_repository_order_is_honoured() -> None:
    results = [
        attempt(1, verified=True, lines_changed=100, seconds=5.0),
        attempt(2, verified=False, checks_failed=1, lines_changed=3, seconds=50.0),
    ]
    assert numbers(rank(results)) == [1, 2]
    assert numbers(rank(results, parse_rank_by(["diff"]))) == [2, 1]
    assert numbers(rank(results, parse_rank_by(["Duration", "diff"]))) == [1, 2]


@pytest.mark.parametrize(
    ("words", "message"),
    [(["speed"], "unknown ranking key 'speed'"), (["diff", "diff"], "given twice")],
)
def test_a_bad_rank_by_is_named(words: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_rank_by(words)


def test_auto_pick_takes_the_top_only_when_it_passed_verification() -> None:
    passing = attempt(2, verified=True)
    assert auto_pick(rank([attempt(1, verified=False, checks_failed=1), passing])) == passing
    assert auto_pick(rank([attempt(1, verified=None), attempt(2, verified=False)])) is None
    assert auto_pick(rank([attempt(1, outcome=Outcome.FAILURE, verified=True)])) is None
    assert auto_pick([attempt(1, verified=True, commits=0)]) is None
    assert auto_pick([]) is None


def test_the_default_order_is_the_documented_one() -> None:
    assert DEFAULT_RANK_BY == ("verify", "failing_checks", "diff", "cost")


def test_the_last_word_is_cut_to_one_short_line() -> None:
    assert cut_short("done:\n\n  all   tests pass") == "done: all tests pass"
    cut = cut_short("x" * 1000, 20)
    assert len(cut) == 20 and cut.endswith("…")
