"""The Slack channel (optional): a message to an incoming webhook when a run ends.

Set `TRIMO_SLACK_WEBHOOK_URL` to turn it on. A message names the pipeline, how its run
ended and where to look (the dashboard, with `TRIMO_PUBLIC_URL`), never the prompt or the
agent's words unless `TRIMO_SLACK_INCLUDE_PROMPT` says so. Each run is told once, however
many App processes report, and at most `PER_MINUTE` messages a minute go out (the rest are
counted in the log). Sent in the background: Slack never delays GitHub's report.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final

import httpx
import redis.asyncio as aioredis

from app.runs.pipelines import Pipeline, PipelineRun
from app.settings import AppSettings
from runner.job import Outcome, RunFinished

log = logging.getLogger("trimo.reporter")

SENT_PREFIX: Final = "trimo:slack:sent:"
"""+ run id: set once its message went (or was dropped)."""
MINUTE_PREFIX: Final = "trimo:slack:minute:"
PER_MINUTE: Final = 10
TIMEOUT_SECONDS: Final = 5.0
PROMPT_CHARS: Final = 300
WORDS: Final = {
    Outcome.SUCCESS: "finished",
    Outcome.FAILURE: "failed",
    Outcome.TIMED_OUT: "timed out",
    Outcome.CANCELLED: "was stopped",
    Outcome.ERROR: "could not run",
}


def message(settings: AppSettings, pipeline: Pipeline, run: PipelineRun, event: RunFinished) -> str:
    """The text of one run's message (Slack's mrkdwn; `<`, `>` and `&` escaped)."""
    name = f"{pipeline.repo} #{pipeline.number}" if pipeline.number else pipeline.repo
    words = WORDS.get(event.outcome, event.outcome.value)
    if event.outcome is Outcome.SUCCESS:
        if run.mode == "discover":
            words = "finished: its plan is ready"
        elif event.commits:
            noun = "commit" if len(event.commits) == 1 else "commits"
            words = f"finished with {len(event.commits)} {noun}: ready for review"
        else:
            words = "finished with no changes"
    text = f"{_escape(name)} {words} (run by @{_escape(run.requested_by)})"
    if settings.public_url:
        text += f" · <{settings.public_url.rstrip('/')}/pipelines/{pipeline.id}|open it>"
    if settings.slack_include_prompt:
        prompt = " ".join(run.prompt.split())
        prompt = prompt if len(prompt) <= PROMPT_CHARS else prompt[: PROMPT_CHARS - 1] + "…"
        text += f"\n> {_escape(prompt)}"
    return text


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Slack:
    """Posts run endings to the server's Slack incoming webhook, when it has one."""

    def __init__(self, settings: AppSettings, redis: aioredis.Redis) -> None:
        self.settings = settings
        self.redis = redis
        self._sending: set[asyncio.Task[None]] = set()

    def finished(self, pipeline: Pipeline, run: PipelineRun, event: RunFinished) -> None:
        """Tell Slack that `run` ended, in the background (nothing when not configured)."""
        if self.settings.slack_webhook_url is None:
            return
        task = asyncio.create_task(self._send(pipeline, run, event))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def drain(self) -> None:
        """Wait for the messages on their way (tests, and a stopping process)."""
        await asyncio.gather(*self._sending, return_exceptions=True)

    async def _send(self, pipeline: Pipeline, run: PipelineRun, event: RunFinished) -> None:
        url = self.settings.slack_webhook_url
        assert url is not None
        try:
            if not await self.redis.set(SENT_PREFIX + run.run_id, "1", nx=True, ex=86400):
                return  # told already, by this process or another
            minute = MINUTE_PREFIX + str(int(time.time() // 60))
            pipe = self.redis.pipeline(transaction=False)
            pipe.incr(minute)
            pipe.expire(minute, 120)
            count, _ = await pipe.execute()
            if int(count) > PER_MINUTE:
                log.warning("slack: more than %d messages this minute; run %s not told",
                            PER_MINUTE, run.run_id)  # fmt: skip
                return
            text = message(self.settings, pipeline, run, event)
            async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS) as client:
                answer = await client.post(url.get_secret_value(), json={"text": text})
            if answer.status_code >= 300:
                log.warning("slack: the webhook answered %d for run %s",
                            answer.status_code, run.run_id)  # fmt: skip
        except (httpx.HTTPError, OSError) as exc:
            log.warning("slack: run %s not told: %s", run.run_id, type(exc).__name__)
        except Exception:  # a bug here must never touch the run's report
            log.exception("slack: run %s not told", run.run_id)
