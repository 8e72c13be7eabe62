"""What a runner measures about its runs, kept in Redis for the App's `/metrics`.

Runners sit on team machines that a Prometheus server often cannot reach, while every
runner already reaches Redis. So each runner adds its observations to one small hash
(`contract.runner_figures(runner_id)`): a counter per histogram bucket, a sum and a count
for the time to agent and the run duration, runs by outcome, and its mirror cache's size
and gcs. The hash is bounded (a
fixed set of fields), survives the runner's restarts, and expires a day after the runner
was last seen. The App reads the hashes when scraped (`app.ops.metrics`).
"""

from __future__ import annotations

import bisect
from typing import Final

import redis.asyncio as aioredis

from runner import contract

FIGURES_TTL_SECONDS: Final = 24 * 3600
TIME_TO_AGENT: Final = "time_to_agent"
"""From the run being queued for runners to its agent's container starting."""
RUN_DURATION: Final = "run_duration"
"""From a runner taking the run to the run's end (its work saved)."""
BUCKETS: Final[dict[str, tuple[float, ...]]] = {
    TIME_TO_AGENT: (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
    RUN_DURATION: (5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400),
}
"""Upper bounds (seconds) of each histogram's buckets; one more bucket holds the rest."""
OUTCOME_PREFIX: Final = "outcome:"
MIRROR_BYTES: Final = "mirror_bytes"
"""Size of the runner's mirror cache at its last look (`runner.mirrors`)."""
MIRRORS: Final = "mirrors"
SETUP_CACHE_PREFIX: Final = "setup_cache:"
"""Setup cache look-ups by result (`hit`, `miss`), and entries `evicted`."""
SETUP_CACHE_BYTES: Final = "setup_cache_bytes"
MIRROR_GC_PREFIX: Final = "mirror_gc:"
"""Mirror gcs by result: `collected` or `failed`."""


def bucket_field(histogram: str, seconds: float) -> str:
    """The field counting observations of `seconds` (non-cumulative: one bucket each)."""
    return f"{histogram}:bucket:{bisect.bisect_left(BUCKETS[histogram], seconds)}"


def cumulative(histogram: str, fields: dict[str, str]) -> list[tuple[str, float]]:
    """Prometheus buckets (`le`, cumulative count) from a runner's hash fields."""
    bounds = BUCKETS[histogram]
    total = 0.0
    found: list[tuple[str, float]] = []
    for index, bound in enumerate((*bounds, float("inf"))):
        total += float(fields.get(f"{histogram}:bucket:{index}", 0) or 0)
        found.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
    return found


async def observe_run(
    redis: aioredis.Redis,
    runner_id: str,
    *,
    outcome: str,
    duration: float,
    time_to_agent: float | None,
) -> None:
    """Count one finished run of `runner_id` (`time_to_agent` None: its agent never began)."""
    key = contract.runner_figures(runner_id)
    pipe = redis.pipeline(transaction=True)
    observed = [(RUN_DURATION, max(0.0, duration))]
    if time_to_agent is not None:
        observed.append((TIME_TO_AGENT, max(0.0, time_to_agent)))
    for histogram, seconds in observed:
        pipe.hincrby(key, bucket_field(histogram, seconds), 1)
        pipe.hincrby(key, f"{histogram}:count", 1)
        pipe.hincrbyfloat(key, f"{histogram}:sum", seconds)
    pipe.hincrby(key, OUTCOME_PREFIX + outcome, 1)
    pipe.expire(key, FIGURES_TTL_SECONDS)
    pipe.sadd(contract.RUNNER_FIGURES, runner_id)
    await pipe.execute()


async def observe_mirrors(
    redis: aioredis.Redis, runner_id: str, *, mirrors: int, size: int, collected: int, failed: int
) -> None:
    """Record one look at `runner_id`'s mirror cache (`runner.mirrors.tend`)."""
    key = contract.runner_figures(runner_id)
    pipe = redis.pipeline(transaction=True)
    pipe.hset(key, mapping={MIRRORS: mirrors, MIRROR_BYTES: size})
    pipe.hincrby(key, MIRROR_GC_PREFIX + "collected", collected)
    pipe.hincrby(key, MIRROR_GC_PREFIX + "failed", failed)
    pipe.expire(key, FIGURES_TTL_SECONDS)
    pipe.sadd(contract.RUNNER_FIGURES, runner_id)
    await pipe.execute()


async def observe_setup(
    redis: aioredis.Redis, runner_id: str, *, hits: int, misses: int, evicted: int, size: int
) -> None:
    """Count `runner_id`'s setup cache look-ups and evictions since its last report."""
    key = contract.runner_figures(runner_id)
    pipe = redis.pipeline(transaction=True)
    pipe.hset(key, mapping={SETUP_CACHE_BYTES: size})
    for result, count in (("hit", hits), ("miss", misses), ("evicted", evicted)):
        pipe.hincrby(key, SETUP_CACHE_PREFIX + result, count)
    pipe.expire(key, FIGURES_TTL_SECONDS)
    pipe.sadd(contract.RUNNER_FIGURES, runner_id)
    await pipe.execute()
