"""`/metrics` in Prometheus's text format: this process's figures and those Redis holds.

Figures kept in Redis and shared by every App process and runner (runs by state, queue
depths, runners online, reporter lag, write budgets, the runners' own measurements) are
read at scrape time (`read_state`), bounded and under a timeout. A scrape never fails for
them: when Redis cannot answer they are left out, `trimo_redis_up` is 0 and
`trimo_scrape_errors_total` counts it.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from pydantic import SecretStr
from starlette.requests import Request

from app.ops.metrics import REGISTRY, SCRAPE_ERRORS
from app.redisio import as_text, hgetall, smembers, srem
from app.reporting import owed, reporter
from app.reporting.budget import HOUR, MINUTE, WINDOW_PREFIX, WRITERS, Limits
from app.reporting.failures import FAILED_EVENTS
from app.runs import spend
from app.runs.runcounts import RunCounts
from runner import contract, figures, registry

log = logging.getLogger("trimo.metrics")

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
SCRAPE_TIMEOUT_SECONDS: Final = 3.0
MAX_LABELS: Final = 200
"""Most runner labels, runners and installations one scrape reads (the rest are left out)."""


@dataclass
class State:
    """The shared figures, read from Redis at one scrape."""

    runs_by_state: dict[str, int] = field(default_factory=dict)
    runs_finished: dict[str, int] = field(default_factory=dict)
    run_queues: dict[str, int] = field(default_factory=dict)
    event_queue: int = 0
    runners_online: dict[str, int] = field(default_factory=dict)
    runner_slots: dict[str, int] = field(default_factory=dict)
    reporter_pending: int = 0
    reporter_lag: int | None = None
    reporter_owed: int = 0
    failed_events: int = 0
    failed_reports: int = 0
    writes: dict[str, tuple[int, int]] = field(default_factory=dict)
    """installation id -> writes in the last minute and hour."""
    runner_figures: dict[str, dict[str, str]] = field(default_factory=dict)
    spend_by_agent: dict[str, spend.Spent] = field(default_factory=dict)
    """agent -> cost and tokens of every run since spend was first kept."""
    spend_month_by_repo: dict[str, float] = field(default_factory=dict)
    """repository (lower-cased) -> dollars spent this month (UTC)."""


async def read_state(redis: aioredis.Redis, event_queue: str, now: float | None = None) -> State:
    """Everything `/metrics` shows from Redis (bounded: at most `MAX_LABELS` of each kind)."""
    state = State()
    state.runs_by_state, state.runs_finished = await RunCounts(redis).read()
    runners = (await registry.online_runners(redis))[:MAX_LABELS]
    for runner in runners:
        for label in runner.labels:
            state.runners_online[label] = state.runners_online.get(label, 0) + 1
            state.runner_slots[label] = state.runner_slots.get(label, 0) + runner.capacity
    known = await smembers(redis, contract.RUN_LABELS) | {contract.DEFAULT_LABEL}
    labels = sorted(known | set(state.runners_online))[:MAX_LABELS]
    for label in labels:  # 0, not absent: an alert on "no runner" must see the label
        state.runners_online.setdefault(label, 0)
        state.runner_slots.setdefault(label, 0)
    pipe = redis.pipeline(transaction=False)
    for label in labels:
        pipe.zcard(contract.run_queue(label))
    pipe.zcard(event_queue)
    pipe.xlen(FAILED_EVENTS)
    pipe.xlen(reporter.DEAD_LETTERS)
    pipe.zcard(owed.OWED)
    (
        *depths,
        state.event_queue,
        state.failed_events,
        state.failed_reports,
        state.reporter_owed,
    ) = await pipe.execute()
    state.run_queues = dict(zip(labels, depths, strict=True))
    await _read_reporter(redis, state)
    await _read_writes(redis, state, time.time() if now is None else now)
    await _read_runner_figures(redis, state)
    await _read_spend(redis, state, time.time() if now is None else now)
    return state


async def _read_spend(redis: aioredis.Redis, state: State, now: float) -> None:
    state.spend_by_agent = dict(list((await spend.by_agent(redis)).items())[:MAX_LABELS])
    month = datetime.fromtimestamp(now, UTC).strftime("%Y-%m")
    totals = await hgetall(redis, spend.TOTALS_PREFIX + month)
    repos = {
        name.removeprefix("repo:"): int(value) / spend.MICRO
        for name, value in totals.items()
        if name.startswith("repo:") and value.isdigit()
    }
    largest = sorted(repos.items(), key=lambda item: -item[1])[:MAX_LABELS]
    state.spend_month_by_repo = dict(largest)


async def _read_reporter(redis: aioredis.Redis, state: State) -> None:
    if not await redis.exists(contract.ALL_RUN_EVENTS):
        return
    for group in await redis.xinfo_groups(contract.ALL_RUN_EVENTS):
        if as_text(group.get("name")) == reporter.GROUP:
            state.reporter_pending = int(group.get("pending") or 0)
            lag = group.get("lag")
            state.reporter_lag = int(lag) if lag is not None else None


async def _read_writes(redis: aioredis.Redis, state: State, now: float) -> None:
    writers = await redis.zrevrangebyscore(WRITERS, "+inf", now - HOUR, start=0, num=MAX_LABELS)
    installations = [as_text(writer) or "" for writer in writers]
    pipe = redis.pipeline(transaction=False)
    for installation in installations:
        key = f"{WINDOW_PREFIX}{installation}"
        pipe.zcount(key, f"({now - MINUTE}", "+inf")
        pipe.zcount(key, f"({now - HOUR}", "+inf")
    counts = await pipe.execute()
    for index, installation in enumerate(installations):
        state.writes[installation] = (int(counts[2 * index]), int(counts[2 * index + 1]))


async def _read_runner_figures(redis: aioredis.Redis, state: State) -> None:
    runner_ids = sorted(await smembers(redis, contract.RUNNER_FIGURES))[:MAX_LABELS]
    pipe = redis.pipeline(transaction=False)
    for runner_id in runner_ids:
        pipe.hgetall(contract.runner_figures(runner_id))
    expired = []
    for runner_id, found in zip(runner_ids, await pipe.execute(), strict=True):
        if found:
            state.runner_figures[runner_id] = {
                as_text(k) or "": as_text(v) or "" for k, v in found.items()
            }
        else:  # the runner was not seen for a day
            expired.append(runner_id)
    if expired:
        await srem(redis, contract.RUNNER_FIGURES, *expired)


class StateCollector(Collector):
    """The families of one `State`; none when Redis could not be read."""

    def __init__(self, state: State | None, limits: Limits | None = None) -> None:
        self.state = state
        self.limits = limits or Limits()

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "trimo_redis_up", "Whether this scrape could read the figures kept in Redis."
        )
        up.add_metric([], 1 if self.state is not None else 0)
        yield up
        if self.state is not None:
            yield from self._families(self.state)

    def _families(self, state: State) -> Iterator[Metric]:
        runs = GaugeMetricFamily(
            "trimo_runs",
            "Runs not finished, by state (waiting, queued, running).",
            labels=["state"],
        )
        for name in ("waiting", "queued", "running"):
            runs.add_metric([name], state.runs_by_state.get(name, 0))
        yield runs
        finished = CounterMetricFamily(
            "trimo_runs_finished", "Runs that ended, by outcome.", labels=["outcome"]
        )
        for outcome, count in sorted(state.runs_finished.items()):
            finished.add_metric([outcome], count)
        yield finished
        yield _gauge(
            "trimo_run_queue_depth",
            "Runs queued for runners and not yet taken, by runner label.",
            "label",
            state.run_queues,
        )
        events = GaugeMetricFamily(
            "trimo_event_queue_depth", "Deliveries queued for the event worker."
        )
        events.add_metric([], state.event_queue)
        yield events
        yield _gauge(
            "trimo_runners_online", "Runners with a live heartbeat, by label.", "label",
            state.runners_online,
        )  # fmt: skip
        yield _gauge(
            "trimo_runner_slots", "Runs the online runners can take at once, by label.", "label",
            state.runner_slots,
        )  # fmt: skip
        pending = GaugeMetricFamily(
            "trimo_reporter_pending",
            "Run events the reporter has read but GitHub has not yet taken (pending entries).",
        )
        pending.add_metric([], state.reporter_pending)
        yield pending
        owing = GaugeMetricFamily(
            "trimo_reporter_owed",
            "Comment, pull request and reaction updates runs owe GitHub (retried apart).",
        )
        owing.add_metric([], state.reporter_owed)
        yield owing
        if state.reporter_lag is not None:
            lag = GaugeMetricFamily(
                "trimo_reporter_lag", "Run events the reporter has not read yet."
            )
            lag.add_metric([], state.reporter_lag)
            yield lag
        failed = GaugeMetricFamily(
            "trimo_dead_letters",
            "Entries parked for the operator: events given up and run reports given up.",
            labels=["stream"],
        )
        failed.add_metric(["events"], state.failed_events)
        failed.add_metric(["reports"], state.failed_reports)
        yield failed
        budget = GaugeMetricFamily(
            "trimo_github_write_budget_remaining",
            "Writes an installation may still make to GitHub, by window (minute, hour).",
            labels=["installation", "window"],
        )
        for installation, (minute, hour) in sorted(state.writes.items()):
            budget.add_metric([installation, "minute"], max(0, self.limits.per_minute - minute))
            budget.add_metric([installation, "hour"], max(0, self.limits.per_hour - hour))
        yield budget
        yield from _runner_families(state.runner_figures)
        yield from _spend_families(state)


def _spend_families(state: State) -> Iterator[Metric]:
    cost = CounterMetricFamily(
        "trimo_spend_usd", "Dollars the agents reported spending on finished runs, by agent.",
        labels=["agent"],
    )  # fmt: skip
    tokens = CounterMetricFamily(
        "trimo_spend_tokens", "Tokens of finished runs, by agent and kind (input, output).",
        labels=["agent", "kind"],
    )  # fmt: skip
    for agent, spent in sorted(state.spend_by_agent.items()):
        cost.add_metric([agent], spent.cost_usd)
        tokens.add_metric([agent, "input"], spent.input_tokens)
        tokens.add_metric([agent, "output"], spent.output_tokens)
    yield cost
    yield tokens
    month = GaugeMetricFamily(
        "trimo_spend_month_usd",
        "Dollars spent this calendar month (UTC) by repository (what TRIMO_POLICY_MONTHLY_USD "
        "caps), the largest 200.",
        labels=["repo"],
    )
    for repo, dollars in sorted(state.spend_month_by_repo.items()):
        month.add_metric([repo], dollars)
    yield month


def _gauge(name: str, documentation: str, label: str, values: dict[str, int]) -> Metric:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


_HISTOGRAM_HELP: Final = {
    figures.TIME_TO_AGENT: "Seconds from a run being queued to its agent starting, by runner.",
    figures.RUN_DURATION: "Seconds from a runner taking a run to its end, by runner.",
}


def _runner_families(by_runner: dict[str, dict[str, str]]) -> Iterator[Metric]:
    for histogram, documentation in _HISTOGRAM_HELP.items():
        family = HistogramMetricFamily(
            f"trimo_{histogram}_seconds", documentation, labels=["runner"]
        )
        for runner_id, fields in sorted(by_runner.items()):
            family.add_metric(
                [runner_id],
                figures.cumulative(histogram, fields),
                sum_value=_number(fields.get(f"{histogram}:sum")),
            )
        yield family
    outcomes = CounterMetricFamily(
        "trimo_runner_runs", "Runs a runner ended, by runner and outcome.",
        labels=["runner", "outcome"],
    )  # fmt: skip
    for runner_id, fields in sorted(by_runner.items()):
        for name, value in sorted(fields.items()):
            if name.startswith(figures.OUTCOME_PREFIX):
                outcomes.add_metric(
                    [runner_id, name.removeprefix(figures.OUTCOME_PREFIX)], _number(value)
                )
    yield outcomes
    yield from _mirror_families(by_runner)
    yield from _setup_families(by_runner)


def _mirror_families(by_runner: dict[str, dict[str, str]]) -> Iterator[Metric]:
    size = GaugeMetricFamily(
        "trimo_runner_mirror_bytes", "Bytes of a runner's repository mirrors on its disk.",
        labels=["runner"],
    )  # fmt: skip
    count = GaugeMetricFamily(
        "trimo_runner_mirrors", "Repository mirrors a runner keeps.", labels=["runner"]
    )
    gcs = CounterMetricFamily(
        "trimo_runner_mirror_gcs", "Scheduled git gcs of a runner's mirrors, by result.",
        labels=["runner", "result"],
    )  # fmt: skip
    for runner_id, fields in sorted(by_runner.items()):
        if figures.MIRROR_BYTES not in fields:
            continue  # it has not looked at its mirrors yet
        size.add_metric([runner_id], _number(fields[figures.MIRROR_BYTES]))
        count.add_metric([runner_id], _number(fields.get(figures.MIRRORS)))
        for result in ("collected", "failed"):
            value = fields.get(figures.MIRROR_GC_PREFIX + result)
            gcs.add_metric([runner_id, result], _number(value))
    yield size
    yield count
    yield gcs


def _setup_families(by_runner: dict[str, dict[str, str]]) -> Iterator[Metric]:
    lookups = CounterMetricFamily(
        "trimo_runner_setup_cache_lookups",
        "Setup cache look-ups of a runner's runs and previews, by result (hit or miss); "
        "the hit rate is hit / (hit + miss).",
        labels=["runner", "result"],
    )
    evicted = CounterMetricFamily(
        "trimo_runner_setup_cache_evictions",
        "Setup cache entries a runner removed, least recently used, past TRIMO_SETUP_CACHE_MAX.",
        labels=["runner"],
    )
    size = GaugeMetricFamily(
        "trimo_runner_setup_cache_bytes", "Bytes of a runner's setup cache on its disk.",
        labels=["runner"],
    )  # fmt: skip
    for runner_id, fields in sorted(by_runner.items()):
        if figures.SETUP_CACHE_BYTES not in fields:
            continue  # it has not reported its setup cache yet
        for result in ("hit", "miss"):
            value = fields.get(figures.SETUP_CACHE_PREFIX + result)
            lookups.add_metric([runner_id, result], _number(value))
        evicted.add_metric([runner_id], _number(fields.get(figures.SETUP_CACHE_PREFIX + "evicted")))
        size.add_metric([runner_id], _number(fields[figures.SETUP_CACHE_BYTES]))
    yield lookups
    yield evicted
    yield size


def _number(value: str | None) -> float:
    try:
        return float(value or 0)
    except ValueError:
        return 0.0


def authorized(request: Request, token: SecretStr | None) -> bool:
    """Whether a scrape may read `/metrics`: any, without TRIMO_METRICS_TOKEN; else only
    with `Authorization: Bearer <token>`."""
    if token is None:
        return True
    return hmac.compare_digest(
        request.headers.get("authorization", "").encode(),
        f"Bearer {token.get_secret_value()}".encode(),
    )


async def exposition(redis: aioredis.Redis | None, event_queue: str) -> bytes:
    """The text a scrape gets; never raises for Redis (see the module's docstring)."""
    state = None
    if redis is not None:
        try:
            async with asyncio.timeout(SCRAPE_TIMEOUT_SECONDS):
                state = await read_state(redis, event_queue)
        except Exception as exc:  # a scrape reports the failure, it never fails
            SCRAPE_ERRORS.inc()
            log.warning("/metrics: the figures kept in Redis are left out: %r", exc)
    else:
        SCRAPE_ERRORS.inc()
    shared = CollectorRegistry()
    shared.register(StateCollector(state))
    # Rendering a large fleet's figures takes a while: not on the loop the webhooks use.
    return await asyncio.to_thread(lambda: generate_latest(REGISTRY) + generate_latest(shared))
