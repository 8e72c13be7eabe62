"""The hostile agent against its budget (real Docker and git): what it reports of its cost
can leave out cost, never take back cost already counted or stop the counting."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from app.runs import spend
from runner.agents.aider import AiderAdapter
from runner.events import Usage
from runner.job import Outcome
from tests.engine_helpers import make_request, run


def _usage(cost: str) -> str:
    return f"""echo '{{"type": "usage", "input_tokens": 10, "cost_usd": {cost}}}'"""


@pytest.mark.docker
@pytest.mark.parametrize("forged", ["NaN", "-1e9", "Infinity"])
def test_a_forged_cost_never_stops_the_budget_counting(
    sample_repo: Path, cache: Path, forged: str
) -> None:
    """After 0.30 spent, one line of NaN (or a negative cost) used to make every later
    total NaN (or below zero): 0.30 more went by the 0.50 budget and the run went on."""
    script = "; ".join(
        [
            "echo kept > work.txt",
            _usage("0.30"),
            _usage(forged),
            _usage("0.30"),
            "sleep 120",
        ]
    )
    request = make_request(sample_repo, script, timeout_s=90, max_cost_usd=0.5)
    finished, _ = run(cache, request)
    assert finished.outcome is Outcome.CANCELLED, finished.reason
    assert finished.reason == "budget: $0.60 of $0.50"
    assert finished.usage is not None and finished.usage.cost_usd == pytest.approx(0.6)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(redis_url)
    yield redis
    await redis.aclose()


async def test_a_cost_too_large_to_be_real_is_counted_as_the_most_a_run_may_cost(
    client: aioredis.Redis,
) -> None:
    """A reported cost past Redis's integers used to fail the ledger's script halfway (the
    run marked counted, its month's total never added: App's finish raised)."""
    at = datetime(2026, 12, 7, tzinfo=UTC)
    for run_id, cost in (("r1", 1e13), ("r2", 1e300), ("r3", 0.5)):
        usage = Usage(input_tokens=10**30, cost_usd=cost)
        assert await spend.record(
            client, run_id, repo="o/r", person="p", agent="script", at=at, usage=usage
        )
    repo, person = await spend.month_to_date(client, at.date(), "o/r", "p")
    assert repo == person == 2 * spend.MAX_RUN_MICRO_USD + 500_000


def test_a_usage_line_too_large_to_be_real_never_stops_the_run() -> None:
    """Aider prints its usage as text, and so can the model's reply: 10**400 tokens raised
    OverflowError from the parser, which must never stop a run (the run ended in error)."""
    huge = "9" * 400
    line = f"Tokens: {huge}k sent, 12 received. Cost: ${huge} message, $0.02 session."
    [usage] = AiderAdapter().parse_line(line)
    assert usage == Usage(input_tokens=0, output_tokens=12, cost_usd=None)
