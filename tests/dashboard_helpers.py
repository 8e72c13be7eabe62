"""Dashboard test helpers: signing a client in, and pipelines seeded in Redis.

Signing a test client in to the dashboard without the OAuth round trip:
`sign_in` writes the session to Redis as a real sign-in does and hands the client the signed
session cookie; the repository list counts as fresh for `REPOS_TTL_SECONDS`, so no GitHub
call follows. It returns the session's CSRF token, for forms (`csrf`) and `X-CSRF-Token`.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from base64 import b64encode
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import httpx
import itsdangerous
import redis
import redis.asyncio as aioredis
from pydantic import SecretStr

from app.conversation.policy import RunSettings
from app.dashboard.auth import (
    SESSION_COOKIE,
    SESSION_CSRF,
    SESSION_ID,
    SignIn,
    session_secret,
)
from app.dashboard.oauth import UserToken
from app.runs.pipelines import Pipeline, PipelineRun, Pipelines
from app.settings import AppSettings
from runner.job import CommitInfo, Outcome, Resources, RunFinished
from tests.webhook_helpers import make_settings

SESSION_SECRET = "dashboard-test-session-secret"
HOSTILE_LINE = (  # a log line an agent printed to attack the page
    "\x1b[1;31mFAILED\x1b[0m \x1b]8;;javascript:alert(1)\x07click me\x1b]8;;\x07 "
    "\x1b]0;new window title\x07\x1b[2J\x1b[H<script>alert(2)</script>"
    "<img src=x onerror=alert(3)> \x9b32mgreen\x9bm \x1b[38;5;196mpalette\x1b[39m "
    '\u202eevil\u202c "quoted" \x1bPdcs\x1b\\'
)


def session_cookie(secret: str, session: Mapping[str, str]) -> str:
    """A session cookie's value as starlette's SessionMiddleware signs it."""
    data = b64encode(json.dumps(dict(session)).encode())
    return itsdangerous.TimestampSigner(secret).sign(data).decode()


async def sign_in(
    client: httpx.AsyncClient,
    settings: AppSettings,
    login: str,
    repos: Mapping[str, str] | None = None,
) -> str:
    """Sign `client` in as `login` with `repos` (full name → role); the CSRF token.

    `settings.session_secret` must be set: the App under test signs with the same one.
    """
    assert settings.session_secret is not None, "set session_secret in the test's settings"
    signin = SignIn(settings)
    try:
        token = UserToken("ghu_test_" + secrets.token_hex(8), None, None)
        session_id = await signin.open_session(login, token, dict(repos or {}))
    finally:
        await signin.aclose()
    csrf = secrets.token_urlsafe(32)
    cookie = session_cookie(session_secret(settings), {SESSION_ID: session_id, SESSION_CSRF: csrf})
    client.cookies.set(SESSION_COOKIE, cookie)
    return csrf


SETTINGS = RunSettings(
    agent="script", image="i", label="default", timeout_minutes=5, network="none",
    resources=Resources(),
)  # fmt: skip


def dashboard_settings(redis_url: str, admins: str = "root") -> AppSettings:
    """A test App's settings with a session secret (and `admins`, who see everything)."""
    return make_settings(redis_url, session_secret=SecretStr(SESSION_SECRET), admins=admins)


def signed_in(
    base_url: str, settings: AppSettings, login: str, repos: Mapping[str, str]
) -> tuple[httpx.Client, str]:
    """A client for `base_url` signed in as `login` (through `sign_in`), and its CSRF token."""
    holder = httpx.AsyncClient()
    csrf = asyncio.run(sign_in(holder, settings, login, repos))
    client = httpx.Client(base_url=base_url, timeout=10, cookies=holder.cookies)
    asyncio.run(holder.aclose())
    return client, csrf


def make_pipeline(repo: str, number: int, title: str = "", kind: str = "issue") -> Pipeline:
    return Pipeline(
        id=f"{repo.replace('/', '.').lower()}.{number}", repo=repo, number=number, kind=kind,
        branch=f"trimo/{number}-work", base_branch="main",
        clone_url=f"http://git.test/{repo}.git", installation_id=1, title=title,
    )  # fmt: skip


def make_run(run_id: str, prompt: str = "do it", by: str = "alice") -> PipelineRun:
    return PipelineRun(
        run_id=run_id, prompt=prompt, settings=SETTINGS, requested_by=by, thread=1,
    )  # fmt: skip


async def seed(
    redis_url: str,
    pipeline: Pipeline,
    run: PipelineRun,
    state: str = "waiting",
    outcome: Outcome = Outcome.SUCCESS,
    commits: int = 0,
) -> None:
    """Put `run` on `pipeline` in Redis and move it to `state` (waiting, running, finished)."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        store = Pipelines(client)  # type: ignore[arg-type]
        await store.add_run(pipeline, run)
        if state in ("running", "finished"):
            await store.mark_running(run.run_id, runner="runner-1", started_at=datetime.now(UTC))
        if state == "finished":
            made = [CommitInfo(sha=f"{i:040x}", subject=f"change {i}") for i in range(commits)]
            reason = "" if outcome == Outcome.SUCCESS else "boom"
            at = datetime.now(UTC) + timedelta(seconds=1)
            finished = RunFinished(
                run_id=run.run_id, outcome=outcome, reason=reason, commits=made, at=at
            )
            await store.finish(finished)
    finally:
        await client.aclose()


def seed_sync(redis_url: str, *args: object, **kwargs: object) -> None:
    asyncio.run(seed(redis_url, *args, **kwargs))  # type: ignore[arg-type]


def wait_for_subscriber(client: redis.Redis, channel: str, timeout: float = 10) -> None:
    """Wait until someone listens on `channel` (the dashboard's shared feed is subscribed)."""
    deadline = time.monotonic() + timeout
    while client.pubsub_numsub(channel)[0][1] < 1:
        assert time.monotonic() < deadline, f"no subscriber on {channel} in {timeout:g}s"
        time.sleep(0.02)
