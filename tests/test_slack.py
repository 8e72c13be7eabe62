"""The Slack channel: one message per run however often its end is reported, rate-limited,
with no prompt unless asked, and never a failure of the run's report."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from app.reporting.channels.slack import PER_MINUTE, Slack, message
from runner.job import CommitInfo, Outcome, RunFinished
from tests.dashboard_helpers import make_pipeline, make_run
from tests.webhook_helpers import make_settings

pytestmark = pytest.mark.redis
PROMPT = "deploy with the password hunter2"


class Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, str]]] = []
    status = 200

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.received.append(json.loads(body))
        self.send_response(Hook.status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[str]:
    Hook.received, Hook.status = [], 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/services/T0/B0/x"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


def ended(run_id: str, outcome: Outcome = Outcome.SUCCESS, commits: int = 2) -> RunFinished:
    made = [CommitInfo(sha=f"{i:040x}", subject="s") for i in range(commits)]
    return RunFinished(run_id=run_id, outcome=outcome, commits=made, reason=PROMPT)


async def test_a_run_is_told_once_without_its_prompt(
    hook: str, redis_url: str, redis_client: aioredis.Redis
) -> None:
    settings = make_settings(redis_url, slack_webhook_url=SecretStr(hook),
                             public_url="https://trimo.example.com")  # fmt: skip
    pipeline, run = make_pipeline("o/r", 4, "<b>Fix</b>"), make_run("o.r.4-a", prompt=PROMPT)
    slack = Slack(settings, redis_client)
    for _ in range(3):  # reported again after a retry, or by another App process
        slack.finished(pipeline, run, ended(run.run_id))
        await slack.drain()
    assert Hook.received == [{"text": (
        "o/r #4 finished with 2 commits: ready for review (run by @alice) · "
        "<https://trimo.example.com/pipelines/o.r.4|open it>"
    )}]  # fmt: skip
    assert "hunter2" not in str(Hook.received)


async def test_messages_are_rate_limited_and_a_broken_hook_harms_nothing(
    hook: str, redis_url: str, redis_client: aioredis.Redis
) -> None:
    slack = Slack(make_settings(redis_url, slack_webhook_url=SecretStr(hook)), redis_client)
    pipeline = make_pipeline("o/r", 5)
    for index in range(PER_MINUTE + 5):
        slack.finished(pipeline, make_run(f"o.r.5-{index}"), ended(f"o.r.5-{index}"))
    await slack.drain()
    assert len(Hook.received) == PER_MINUTE
    Hook.status = 500
    dead = Slack(make_settings(redis_url, slack_webhook_url=SecretStr("http://127.0.0.1:1/x")),
                 redis_client)  # fmt: skip
    dead.finished(pipeline, make_run("o.r.5-dead"), ended("o.r.5-dead"))
    await dead.drain()  # logged, not raised


def test_the_prompt_only_when_asked_and_markup_escaped(redis_url: str) -> None:
    settings = make_settings(redis_url, slack_include_prompt=True)
    run = make_run("o.r.6-a", prompt="<!channel> & " + "x" * 400)
    text = message(settings, make_pipeline("o/r", 6), run, ended("o.r.6-a", Outcome.FAILURE))
    assert text.startswith("o/r #6 failed (run by @alice)\n> &lt;!channel&gt; &amp; x")
    assert text.endswith("…") and "<!channel>" not in text
    quiet = message(make_settings(redis_url), make_pipeline("o/r", 6), run,
                    ended("o.r.6-a", Outcome.CANCELLED))  # fmt: skip
    assert quiet == "o/r #6 was stopped (run by @alice)"
