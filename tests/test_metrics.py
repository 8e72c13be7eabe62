"""`/metrics` scraped from the App served on loopback, with real Redis, parsed as Prometheus
parses it. The whole loop (GitHub calls, a real run, the runner's figures) is in
tests/test_metrics_loop.py."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from arq import create_pool
from arq.connections import ArqRedis
from githubkit.exception import RequestError
from pydantic import SecretStr

from app.conversation.policy import RunSettings
from app.github.client import GitHubApp
from app.ops.scrape import SCRAPE_TIMEOUT_SECONDS
from app.redisio import settle
from app.reporting import owed, reporter
from app.reporting.budget import Priority, WriteBudget
from app.runs.pipelines import Pipeline, PipelineRun, Pipelines
from runner import contract, figures, registry
from runner.events import Usage
from runner.job import Outcome, Resources, RunFinished
from runner.redisurl import redis_settings
from tests import webhook_helpers
from tests.fakegithub import generate_key_pair
from tests.metrics_helpers import scrape
from tests.webhook_helpers import RunningApp, free_port, make_settings, running_app

pytestmark = pytest.mark.redis

webhook_app = webhook_helpers.webhook_app

SETTINGS = RunSettings(
    agent="script", image="i", label="default", timeout_minutes=1, network="none",
    resources=Resources(),
)  # fmt: skip


@pytest.fixture
async def pool(redis_url: str) -> AsyncIterator[ArqRedis]:
    pool = await create_pool(redis_settings(redis_url))
    yield pool
    await pool.aclose()


def comment_payload(corpora: Path) -> bytes:
    return (corpora / "webhooks" / "issue_comment.created.1.json").read_bytes()


def test_webhooks_are_counted_by_event_and_outcome_with_their_latency(
    webhook_app: RunningApp, corpora: Path
) -> None:
    before = scrape(webhook_app.client)
    body = comment_payload(corpora)
    delivery = str(uuid.uuid4())

    assert webhook_app.deliver("issue_comment", body, delivery=delivery).status_code == 202
    assert webhook_app.deliver("issue_comment", body, delivery=delivery).status_code == 202
    assert (
        webhook_app.deliver("issue_comment", body, signature="sha256=" + "0" * 64).status_code
        == 401
    )
    assert webhook_app.deliver("star", b'{"action": "created"}').status_code == 202
    assert webhook_app.deliver("ping", b'{"zen": "Keep it logically awesome."}').status_code == 200
    assert webhook_app.deliver("issue_comment", b"[1, 2]").status_code == 400
    after = scrape(webhook_app.client)

    def delta(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    assert delta("trimo_webhooks_total", event="issue_comment", outcome="queued") == 1
    assert delta("trimo_webhooks_total", event="issue_comment", outcome="duplicate") == 1
    assert delta("trimo_webhooks_total", event="issue_comment", outcome="malformed") == 1
    # Before its signature is checked, a request's event header is anyone's: not a label.
    assert delta("trimo_webhooks_total", event="other", outcome="unauthorized") == 1
    assert delta("trimo_webhooks_total", event="other", outcome="ignored") == 1
    assert delta("trimo_webhooks_total", event="ping", outcome="ping") == 1
    assert delta("trimo_webhook_response_seconds_count", event="issue_comment") == 3
    assert delta("trimo_webhook_response_seconds_sum", event="issue_comment") > 0
    assert after.value("trimo_event_queue_depth") == 1
    assert after.value("trimo_redis_up") == 1


def test_queues_runners_budgets_reporter_and_dead_letters_come_from_redis(
    webhook_app: RunningApp,
) -> None:
    r = webhook_app.redis
    now = datetime.now(UTC)
    for runner_id, labels, capacity in (("r1", ["default"], 2), ("r2", ["default", "gpu"], 3)):
        info = registry.RunnerInfo(
            id=runner_id, host="h", labels=labels, capacity=capacity, running=[], version="0",
            pid=1, started_at=now, seen_at=now,
        )  # fmt: skip
        r.set(contract.runner_info(runner_id), info.model_dump_json(), ex=20)
        r.sadd(contract.RUNNERS, runner_id)
    r.sadd(contract.RUNNERS, "gone")  # its heartbeat expired
    r.sadd(contract.RUN_LABELS, "arm64", "default")
    r.zadd(contract.run_queue("arm64"), {"run-a": 1, "run-b": 2})
    r.zadd(contract.run_queue("default"), {"run-c": 1})
    r.xgroup_create(contract.ALL_RUN_EVENTS, reporter.GROUP, id="0", mkstream=True)
    for n in range(5):
        r.xadd(contract.ALL_RUN_EVENTS, {"run_id": f"run-{n}", "event": "{}"})
    r.xreadgroup(reporter.GROUP, "c", {contract.ALL_RUN_EVENTS: ">"}, count=2)
    r.xadd(reporter.DEAD_LETTERS, {"run_id": "x"})
    r.zadd(owed.OWED, {"run-1|comment": 1, "run-1|reactions": 1})

    async def spend() -> None:
        client = aioredis.Redis.from_url(webhook_app.settings.redis_url)
        budget = WriteBudget(client)
        for _ in range(3):
            assert await budget.take(4242, Priority.FINAL)
        await client.aclose()

    asyncio.run(spend())

    got = scrape(webhook_app.client)
    assert got.value("trimo_runners_online", label="default") == 2
    assert got.value("trimo_runners_online", label="gpu") == 1
    assert got.value("trimo_runner_slots", label="default") == 5
    assert got.value("trimo_run_queue_depth", label="arm64") == 2  # no runner serves it
    assert got.value("trimo_run_queue_depth", label="default") == 1
    assert got.value("trimo_run_queue_depth", label="gpu") == 0
    assert got.value("trimo_reporter_pending") == 2
    assert got.value("trimo_reporter_lag") == 3
    assert got.value("trimo_reporter_owed") == 2
    assert got.value("trimo_dead_letters", stream="reports") == 1
    assert got.value("trimo_dead_letters", stream="events") == 0
    assert (
        got.value("trimo_github_write_budget_remaining", installation="4242", window="hour") == 497
    )
    assert (
        got.value("trimo_github_write_budget_remaining", installation="4242", window="minute") == 77
    )
    assert not r.sismember(contract.RUNNERS, "gone")


def a_pipeline(*run_ids: str) -> Pipeline:
    runs = [
        PipelineRun(run_id=run_id, prompt="p", settings=SETTINGS, requested_by="a", thread=1)
        for run_id in run_ids
    ]
    return Pipeline(
        id="o.r.1", repo="o/r", number=1, kind="issue", branch="trimo/1-x", base_branch="main",
        clone_url="https://example.invalid/o/r.git", installation_id=1, runs=runs,
    )  # fmt: skip


async def test_runs_by_state_and_outcome_follow_the_pipeline_store(
    pool: ArqRedis, webhook_app: RunningApp
) -> None:
    pipelines = Pipelines(pool)
    seed = a_pipeline()
    first = a_pipeline("run-1").runs[0]
    second = a_pipeline("run-2").runs[0]
    await pipelines.add_run(seed, first)
    await pipelines.add_run(seed, second)
    await pipelines.add_run(seed, second)  # the same run again changes nothing
    got = scrape(webhook_app.client)
    assert got.value("trimo_runs", state="waiting") == 2
    assert got.value("trimo_runs", state="running") == 0

    await pipelines.mark_running("run-1", runner="r1")
    got = scrape(webhook_app.client)
    assert (got.value("trimo_runs", state="waiting"), got.value("trimo_runs", state="running")) == (
        1,
        1,
    )

    finished = RunFinished(run_id="run-1", outcome=Outcome.SUCCESS)
    await pipelines.finish(finished)
    await pipelines.finish(finished)  # a redelivered finish is counted once
    await pipelines.mark_running("run-2", runner="r1")
    await pipelines.finish(RunFinished(run_id="run-2", outcome=Outcome.TIMED_OUT))
    got = scrape(webhook_app.client)
    assert got.value("trimo_runs", state="waiting") == 0
    assert got.value("trimo_runs", state="running") == 0
    assert got.value("trimo_runs_finished_total", outcome="success") == 1
    assert got.value("trimo_runs_finished_total", outcome="timed_out") == 1


async def test_runner_figures_become_histograms_by_runner(
    pool: ArqRedis, webhook_app: RunningApp
) -> None:
    await figures.observe_run(pool, "box-1", outcome="success", duration=42.0, time_to_agent=1.5)
    await figures.observe_run(pool, "box-1", outcome="failure", duration=700.0, time_to_agent=0.2)
    await figures.observe_run(pool, "box-2", outcome="error", duration=1.0, time_to_agent=None)
    got = scrape(webhook_app.client)

    assert got.value("trimo_run_duration_seconds_count", runner="box-1") == 2
    assert got.value("trimo_run_duration_seconds_sum", runner="box-1") == 742.0
    assert got.value("trimo_run_duration_seconds_bucket", runner="box-1", le="60.0") == 1
    assert got.value("trimo_run_duration_seconds_bucket", runner="box-1", le="1200.0") == 2
    assert got.value("trimo_run_duration_seconds_bucket", runner="box-1", le="+Inf") == 2
    assert got.value("trimo_time_to_agent_seconds_bucket", runner="box-1", le="0.5") == 1
    assert got.value("trimo_time_to_agent_seconds_bucket", runner="box-1", le="2.0") == 2
    assert got.value("trimo_time_to_agent_seconds_sum", runner="box-1") == pytest.approx(1.7)
    assert got.value("trimo_time_to_agent_seconds_count", runner="box-2") == 0  # never began
    assert got.value("trimo_run_duration_seconds_count", runner="box-2") == 1
    assert got.value("trimo_runner_runs_total", runner="box-1", outcome="failure") == 1
    assert got.value("trimo_runner_runs_total", runner="box-2", outcome="error") == 1
    assert 0 < await pool.ttl(contract.runner_figures("box-1")) <= figures.FIGURES_TTL_SECONDS

    await pool.delete(contract.runner_figures("box-2"))  # expired: a day without the runner
    got = scrape(webhook_app.client)
    assert not got.has("trimo_run_duration_seconds_count", runner="box-2")
    assert not await settle(pool.sismember(contract.RUNNER_FIGURES, "box-2"))


def test_a_scrape_without_redis_still_answers_and_says_so(corpora: Path) -> None:
    settings = make_settings(f"redis://127.0.0.1:{free_port()}/0")
    with running_app(settings) as app:
        before = scrape(app.client)
        assert app.deliver("issue_comment", comment_payload(corpora)).status_code == 503
        after = scrape(app.client)
    assert before.value("trimo_redis_up") == after.value("trimo_redis_up") == 0
    assert after.value("trimo_scrape_errors_total") == before.value("trimo_scrape_errors_total") + 1
    assert (
        after.value("trimo_webhooks_total", event="issue_comment", outcome="unavailable")
        == before.value("trimo_webhooks_total", event="issue_comment", outcome="unavailable") + 1
    )
    assert "trimo_runs" not in after.families


def test_a_scrape_with_a_stuck_redis_answers_within_its_timeout(redis_url: str) -> None:
    settings = make_settings(redis_url)
    pauser = redis.Redis.from_url(redis_url)
    with running_app(settings) as app:
        assert scrape(app.client).value("trimo_redis_up") == 1  # the pool is open
        pauser.execute_command("CLIENT", "PAUSE", 5000, "ALL")  # Redis answers no one for 5 s
        began = time.monotonic()
        got = scrape(app.client)
        took = time.monotonic() - began
        assert pauser.ping()  # answered when the pause is over
    pauser.close()
    assert got.value("trimo_redis_up") == 0
    assert took < SCRAPE_TIMEOUT_SECONDS + 1


def test_metrics_token_guards_the_scrape(redis_url: str) -> None:
    settings = make_settings(redis_url, metrics_token=SecretStr("s3cret-scrape"))
    with running_app(settings) as app:
        refused = app.client.get("/metrics")
        wrong = app.client.get("/metrics", headers={"Authorization": "Bearer nope"})
        got = scrape(app.client, Authorization="Bearer s3cret-scrape")
    assert refused.status_code == wrong.status_code == 401
    assert "bearer token" in refused.json()["error"]
    assert got.value("trimo_redis_up") == 1


async def test_github_requests_without_an_answer_show_as_sent_but_not_answered(
    pool: ArqRedis, webhook_app: RunningApp
) -> None:
    pem, _public = generate_key_pair()
    settings = make_settings(
        webhook_app.settings.redis_url,
        github_app_id=1,
        github_private_key=SecretStr(pem),
        github_api_url=f"http://127.0.0.1:{free_port()}",  # nothing listens
    )
    github = GitHubApp(settings, pool, auto_retry=False, timeout=2)
    before = scrape(webhook_app.client)
    with pytest.raises(RequestError):
        await github.mint_token(7, "widgets")
    after = scrape(webhook_app.client)
    sent = "trimo_github_requests_sent_total"
    assert after.total(sent) - before.total(sent) >= 1
    answered = "trimo_github_requests_total"
    assert after.total(answered) == before.total(answered)


def test_runner_gauges_read_0_rather_than_vanish(webhook_app: RunningApp) -> None:
    """With no runner online for a label, `trimo_runners_online` and `trimo_runner_slots`
    say 0 for it: an alert on `== 0` can fire (an absent series matches nothing)."""
    label = f"arm-{uuid.uuid4().hex[:8]}"
    webhook_app.redis.sadd(contract.RUN_LABELS, label)
    webhook_app.redis.zadd(contract.run_queue(label), {"run-x": 1})
    got = scrape(webhook_app.client)
    for name in ("trimo_runners_online", "trimo_runner_slots"):
        assert got.has(name, label=label) and got.value(name, label=label) == 0, name
        assert got.has(name, label=contract.DEFAULT_LABEL), name
    assert got.value("trimo_run_queue_depth", label=label) == 1


async def test_spend_by_agent_and_this_months_by_repository(
    pool: ArqRedis, webhook_app: RunningApp
) -> None:
    pipelines = Pipelines(pool)
    await pipelines.add_run(a_pipeline(), a_pipeline("run-1").runs[0])
    usage = Usage(input_tokens=1200, output_tokens=300, cost_usd=0.42)
    finished = RunFinished(run_id="run-1", outcome=Outcome.SUCCESS, usage=usage)
    await pipelines.finish(finished)
    await pipelines.finish(finished)  # a redelivered finish is added once
    got = scrape(webhook_app.client)
    assert got.value("trimo_spend_usd_total", agent="script") == pytest.approx(0.42)
    assert got.value("trimo_spend_tokens_total", agent="script", kind="input") == 1200
    assert got.value("trimo_spend_tokens_total", agent="script", kind="output") == 300
    assert got.value("trimo_spend_month_usd", repo="o/r") == pytest.approx(0.42)
