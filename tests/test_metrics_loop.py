"""Metrics and logs of the whole loop: `trimo serve` and `trimo runner` as real processes
(real Redis, Docker and git, GitHub's stand-in), a real run, then `/metrics` and the logs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.loop_harness import OWNER, REPO, RUNNER_ID, Loop, running_loop
from tests.metrics_helpers import Scrape, scrape

pytestmark = [pytest.mark.docker, pytest.mark.redis]

FULL = f"{OWNER}/{REPO}"


@pytest.fixture(scope="module")
def loop(
    redis_server: str, tmp_path_factory: pytest.TempPathFactory, corpora: Path, test_image: str
) -> Iterator[Loop]:
    workdir = tmp_path_factory.mktemp("metrics")
    with running_loop(redis_server, workdir, corpora, strict=False) as loop:
        yield loop


def metrics(loop: Loop) -> Scrape:
    return scrape(loop.http, f"http://127.0.0.1:{loop.port}/metrics")


def json_lines(loop: Loop, name: str) -> list[dict[str, object]]:
    """Every line of a process's log, each one a JSON object (its output is not a terminal)."""
    return [json.loads(line) for line in loop.log(name).splitlines() if line.strip()]


def test_a_run_shows_in_metrics_and_in_json_logs(loop: Loop) -> None:
    before = metrics(loop)
    assert before.value("trimo_runners_online", label="default") == 1
    number = loop.new_issue("Count me", "a run to measure")
    loop.comment(number, "/trimo run sleep 1 && echo hi > hi.txt && git add . && git commit -qm hi")

    def finished() -> Scrape | None:
        got = metrics(loop)
        done = got.value("trimo_runs_finished_total", outcome="success")
        return got if done == 1 and got.value("trimo_reporter_pending") == 0 else None

    after = loop.wait(finished, 120, "the run to finish and be reported")

    def delta(name: str, **labels: str) -> float:
        return after.total(name, **labels) - before.total(name, **labels)

    assert delta("trimo_webhooks_total", event="issue_comment", outcome="queued") == 1
    assert delta("trimo_events_handled_total", event="issue_comment", outcome="handled") == 1
    assert delta("trimo_event_handling_seconds_count", event="issue_comment") == 1
    assert delta("trimo_github_requests_total", method="POST", status="2xx") >= 3
    assert delta("trimo_github_requests_total", method="PATCH", status="2xx") >= 1
    sent, answered = "trimo_github_requests_sent_total", "trimo_github_requests_total"
    # The stand-in answers every request (one may be on its way at the scrape).
    assert 0 <= delta(sent) - delta(answered) <= 1 and delta(answered) > 0
    assert (
        after.value("trimo_runs", state="waiting")
        == after.value("trimo_runs", state="running")
        == 0
    )
    assert after.value("trimo_run_queue_depth", label="default") == 0
    assert after.value("trimo_event_queue_depth") == 0
    assert after.value("trimo_time_to_agent_seconds_count", runner=RUNNER_ID) == 1
    assert 0 < after.value("trimo_time_to_agent_seconds_sum", runner=RUNNER_ID) < 60
    assert after.value("trimo_run_duration_seconds_count", runner=RUNNER_ID) == 1
    assert after.value("trimo_run_duration_seconds_sum", runner=RUNNER_ID) >= 1  # sleep 1
    assert after.value("trimo_runner_runs_total", runner=RUNNER_ID, outcome="success") == 1
    installation = str(loop.creds.installation_id)
    remaining = after.value(
        "trimo_github_write_budget_remaining", installation=installation, window="hour"
    )
    assert 0 < remaining < 500  # the reporter's writes came out of the hour's 500
    assert after.value("trimo_redis_up") == 1

    serve = json_lines(loop, "serve")
    queued = [line for line in serve if str(line["message"]).startswith("queued delivery")]
    assert queued and queued[-1]["repo"] == FULL and queued[-1]["delivery_id"]
    delivery = queued[-1]["delivery_id"]
    handled = [line for line in serve if line["delivery_id"] == delivery and line["run_id"] is None]
    assert any(line["pipeline"] == f"octo-org.widgets.{number}" for line in handled)
    runner = json_lines(loop, "runner")
    ended = [line for line in runner if "ended: success" in str(line["message"])]
    assert len(ended) == 1
    assert ended[0]["repo"] == FULL and ended[0]["pipeline"] == f"octo-org.widgets.{number}"
    assert str(ended[0]["run_id"]).startswith(f"octo-org.widgets.{number}-")
    for line in serve + runner:
        assert "ghs_" not in json.dumps(line), "an installation token reached the logs"
