"""A run's budget when it starts: the least of its own `max_cost_usd` and what is left of
this month's caps (`TRIMO_POLICY_MONTHLY_USD` of its repository and
`TRIMO_POLICY_MONTHLY_USD_PER_PERSON` of the person who asked), so a run that starts after
others spent cannot run past a cap. The one place this is computed (`Dispatch.enqueue`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import redis.asyncio as aioredis

from app.runs import spend
from app.runs.pipelines import utcnow

LEAST_USD: Final = 1 / spend.MICRO
"""A cap already reached when the run starts leaves it this: stopped at its first report."""


@dataclass(frozen=True)
class MonthlyCaps:
    """The server's monthly caps in dollars; None: no cap."""

    repo_usd: float | None = None
    person_usd: float | None = None


@dataclass(frozen=True)
class Budget:
    """What the runner stops the run at; `cap` names the monthly cap that set it, and
    `shown` is False when printing it would tell a person's spend elsewhere."""

    usd: float | None
    cap: str | None = None
    shown: bool = True


def run_budget(
    own_usd: float | None,
    caps: MonthlyCaps,
    spent_micro: tuple[int, int],
    repo: str,
    person: str,
) -> Budget:
    """The least of `own_usd` and what each cap leaves after `spent_micro` (the repository's,
    the person's, this month); a tie goes to the run's own budget, then the repository's."""
    budget = Budget(own_usd)
    for cap, spent, name, shown in (
        (caps.repo_usd, spent_micro[0], f"monthly cap of {repo}", True),
        (caps.person_usd, spent_micro[1], f"monthly cap per person of @{person}", False),
    ):
        if cap is None:
            continue
        left = max(LEAST_USD, round(cap - spent / spend.MICRO, 6))
        if budget.usd is None or left < budget.usd:
            budget = Budget(left, name, shown)
    return budget


async def budget_for(
    redis: aioredis.Redis, caps: MonthlyCaps, own_usd: float | None, repo: str, person: str
) -> Budget:
    """`run_budget` with this month's spend so far (read only when a cap is set)."""
    if caps.repo_usd is None and caps.person_usd is None:
        return Budget(own_usd)
    spent = await spend.month_to_date(redis, utcnow().date(), repo, person)
    return run_budget(own_usd, caps, spent, repo, person)
