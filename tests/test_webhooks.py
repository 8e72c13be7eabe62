"""The webhook edge over real HTTP (uvicorn on loopback) with a real Redis."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import redis
from arq.connections import ArqRedis, create_pool
from arq.constants import job_key_prefix
from githubkit.webhooks import verify
from pydantic import SecretStr

from app.edge.events import HANDLED_EVENTS, is_handled
from app.edge.web import (
    DELIVERY_TTL_SECONDS,
    QUEUE_NAME,
    Queuing,
    create_app,
    delivery_key,
    enqueue_delivery,
)
from app.settings import AppSettings, SettingsError
from runner.redisurl import redis_settings
from tests import webhook_helpers
from tests.webhook_helpers import (
    RunningApp,
    free_port,
    make_settings,
    running_app,
    serve_in_thread,
    sign,
)

webhook_app = webhook_helpers.webhook_app

# Written out here rather than taken from app.edge.events, so the test checks the list itself.
EXPECTED_HANDLED = {
    ("issue_comment", "created"),
    ("issues", "labeled"),
    ("pull_request_review_comment", "created"),
    ("check_run", "requested_action"),
    ("check_run", "rerequested"),
    ("check_suite", "completed"),
    ("issues", "closed"),
    ("pull_request", "closed"),
    ("pull_request", "edited"),
}
EXPECTED_ANY_ACTION = {"installation", "installation_repositories", "push"}
NOT_PAYLOADS = ("delivery-headers.", "signature-test-vector.")


def expected_handled(event: str, action: str | None) -> bool:
    return event in EXPECTED_ANY_ACTION or (event, action) in EXPECTED_HANDLED


def corpus_payloads(corpora: Path) -> list[Path]:
    files = sorted(
        p for p in (corpora / "webhooks").glob("*.json") if not p.name.startswith(NOT_PAYLOADS)
    )
    assert len(files) > 150
    return files


def comment_body(corpora: Path) -> bytes:
    return (corpora / "webhooks" / "issue_comment.created.1.json").read_bytes()


# --- events ---------------------------------------------------------------------------


def test_is_handled_matches_the_documented_pairs() -> None:
    for event, action in EXPECTED_HANDLED:
        assert is_handled(event, action)
    for event in EXPECTED_ANY_ACTION:
        for action in ("created", "deleted", "suspend", "added", "removed"):
            assert is_handled(event, action)
    assert not is_handled("issues", "opened")
    assert not is_handled("issue_comment", "edited")
    assert not is_handled("issue_comment", None)
    assert not is_handled("issue_comment", "*")
    assert not is_handled("integration_installation", "created")
    assert not is_handled("ping", None)
    assert is_handled("push", None)  # a push has no action
    assert len(HANDLED_EVENTS) == len(EXPECTED_HANDLED) + len(EXPECTED_ANY_ACTION)


# --- every real payload ----------------------------------------------------------------


def test_every_corpus_payload_is_queued_once_or_ignored(
    webhook_app: RunningApp, corpora: Path
) -> None:
    expected_jobs: dict[str, tuple[str, dict[str, object]]] = {}
    problems: list[str] = []
    for path in corpus_payloads(corpora):
        event, action_name, _ = path.name.split(".", 2)
        body = path.read_bytes()
        payload = json.loads(body)
        action = None if action_name == "none" else action_name
        assert payload.get("action") == action, path.name
        delivery = str(uuid.uuid4())
        response = webhook_app.deliver(event, body, delivery=delivery)
        if event == "ping":
            want: tuple[int, object] = (200, {"pong": True})
        elif expected_handled(event, action):
            want = (202, {"queued": True})
            expected_jobs[f"gh-{delivery}"] = (event, payload)
        else:
            label = f"{event}.{action}" if action else event
            want = (202, {"ignored": label})
        if (response.status_code, response.json()) != want:
            problems.append(f"{path.name}: {response.status_code} {response.text[:200]}")
    assert not problems, "\n".join(problems)

    queued = webhook_app.queued()
    assert set(queued) == set(expected_jobs)
    assert len(expected_jobs) >= 25  # the corpus has handled events of every kind
    assert {event for event, _ in expected_jobs.values()} >= {
        "issue_comment",
        "issues",
        "pull_request",
        "pull_request_review_comment",
        "check_run",
        "installation",
        "installation_repositories",
    }
    for jid, (event, payload) in expected_jobs.items():
        job = queued[jid]
        assert job.function == "handle_event"
        assert job.args == (event, jid.removeprefix("gh-"), payload)
        assert job.kwargs == {}


# --- signatures ------------------------------------------------------------------------


def test_github_signature_test_vector(corpora: Path, redis_url: str) -> None:
    vector = json.loads(
        (corpora / "webhooks" / "signature-test-vector.github-docs.json").read_text()
    )
    body = vector["payload"].encode()
    assert verify(vector["secret"], body, vector["x_hub_signature_256"])
    assert sign(vector["secret"], body) == vector["x_hub_signature_256"]

    settings = make_settings(redis_url, webhook_secret=SecretStr(vector["secret"]))
    with running_app(settings) as app:
        good = app.deliver("issues", body, signature=vector["x_hub_signature_256"])
        # Past the signature: the vector's body is not JSON.
        assert good.status_code == 400
        assert "JSON" in good.json()["error"]
        flipped = vector["x_hub_signature_256"][:-1] + "0"
        assert flipped != vector["x_hub_signature_256"]
        assert app.deliver("issues", body, signature=flipped).status_code == 401


def _sha1(secret: str, body: bytes) -> str:
    return "sha1=" + hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


@pytest.mark.parametrize(
    "case", ["forged", "missing", "sha1-only", "sha1-in-256-header", "wrong-secret", "tampered"]
)
def test_bad_signatures_are_401_and_queue_nothing(
    webhook_app: RunningApp, corpora: Path, case: str
) -> None:
    body = comment_body(corpora)
    secret = webhook_app.secret
    headers: dict[str, str | None] = {}
    sent = body
    if case == "forged":
        headers["X-Hub-Signature-256"] = "sha256=" + "ab" * 32
    elif case == "missing":
        headers["X-Hub-Signature-256"] = None
    elif case == "sha1-only":
        headers["X-Hub-Signature-256"] = None
        headers["X-Hub-Signature"] = _sha1(secret, body)
    elif case == "sha1-in-256-header":
        headers["X-Hub-Signature-256"] = _sha1(secret, body)
    elif case == "wrong-secret":
        headers["X-Hub-Signature-256"] = sign("not-the-secret", body)
    else:
        sent = body.replace(b'"created"', b'"edited"', 1)
        assert sent != body
        headers["X-Hub-Signature-256"] = sign(secret, body)
    delivery = str(uuid.uuid4())
    response = webhook_app.deliver("issue_comment", sent, delivery=delivery, headers=headers)
    assert response.status_code == 401
    assert "signature" in response.json()["error"]
    assert webhook_app.queued() == {}
    assert not webhook_app.seen(delivery)


# --- deduplication ---------------------------------------------------------------------


def test_replayed_delivery_is_queued_once(webhook_app: RunningApp, corpora: Path) -> None:
    body = comment_body(corpora)
    delivery = str(uuid.uuid4())
    first = webhook_app.deliver("issue_comment", body, delivery=delivery)
    assert (first.status_code, first.json()) == (202, {"queued": True})
    for _ in range(3):
        again = webhook_app.deliver("issue_comment", body, delivery=delivery)
        assert (again.status_code, again.json()) == (202, {"duplicate": True})
    assert list(webhook_app.queued()) == [f"gh-{delivery}"]
    ttl = webhook_app.redis.ttl(delivery_key(delivery))
    assert DELIVERY_TTL_SECONDS - 60 < ttl <= DELIVERY_TTL_SECONDS == 7 * 24 * 3600


async def test_concurrent_redeliveries_queue_once(webhook_app: RunningApp, corpora: Path) -> None:
    body = comment_body(corpora)
    delivery = str(uuid.uuid4())
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "issue_comment",
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": sign(webhook_app.secret, body),
    }
    async with httpx.AsyncClient(base_url=webhook_app.base_url) as client:
        responses = await asyncio.gather(
            *(client.post("/webhooks/github", content=body, headers=headers) for _ in range(20))
        )
    answers = [r.json() for r in responses]
    # One queues it; the others hear it was queued, or (while that try is still on its
    # way) that it is being queued and to come again: none is told "duplicate" too early.
    assert answers.count({"queued": True}) == 1
    later = [r for r in responses if r.status_code == 503]
    assert all("being queued" in r.json()["error"] for r in later)
    assert answers.count({"duplicate": True}) + len(later) == 19
    assert list(webhook_app.queued()) == [f"gh-{delivery}"]


def test_failed_enqueue_forgets_the_delivery(webhook_app: RunningApp, corpora: Path) -> None:
    body = comment_body(corpora)
    delivery = str(uuid.uuid4())
    webhook_app.redis.set(QUEUE_NAME, "not a sorted set")  # ZADD into it fails in Redis
    failed = webhook_app.deliver("issue_comment", body, delivery=delivery)
    assert failed.status_code == 503
    assert "not queued" in failed.json()["error"]
    assert not webhook_app.seen(delivery)
    assert not webhook_app.redis.exists(f"{job_key_prefix}gh-{delivery}")

    webhook_app.redis.delete(QUEUE_NAME)
    redelivered = webhook_app.deliver("issue_comment", body, delivery=delivery)
    assert (redelivered.status_code, redelivered.json()) == (202, {"queued": True})
    assert list(webhook_app.queued()) == [f"gh-{delivery}"]


async def test_a_redelivery_while_the_first_try_is_queuing_is_not_called_a_duplicate(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GitHub gives up on an answer after 10 s and the delivery is redelivered while the
    first try still waits on a slow Redis. Answering the redelivery "duplicate" would lose
    the delivery when the first try then fails: it must be told to come again."""
    pool = await create_pool(redis_settings(redis_url))
    delivery, payload = str(uuid.uuid4()), {"action": "created"}
    redelivered = asyncio.Event()
    real = ArqRedis.enqueue_job

    async def slow_then_failing(self: ArqRedis, *args: Any, **kwargs: Any) -> Any:
        if not redelivered.is_set():
            await redelivered.wait()
            raise TimeoutError("Redis answered too late")
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(ArqRedis, "enqueue_job", slow_then_failing)
    try:
        first = asyncio.create_task(enqueue_delivery(pool, "star", delivery, payload))
        await asyncio.sleep(0.2)  # the first try holds the mark and waits on Redis
        with pytest.raises(Queuing):
            await enqueue_delivery(pool, "star", delivery, payload)
        redelivered.set()
        with pytest.raises(TimeoutError):
            await first
        assert await enqueue_delivery(pool, "star", delivery, payload)  # the next redelivery
        assert [j.decode() for j in await pool.zrange(QUEUE_NAME, 0, -1)] == [f"gh-{delivery}"]
    finally:
        await pool.aclose()


# --- malformed requests ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"action": "created", "issue": {"number": 1', "application/json"),
        (b"this is not json", "application/json"),
        (b'[{"action": "created"}]', "application/json"),
        (b'"created"', "application/json"),
        (b"", "application/json"),
        (b'{"action": "created"}', "text/plain"),
        (b'{"action": "created"}', ""),
        (b'{"action": "created"}', "application/xml"),
        (b"payload=%7B%22action%22%3A", "application/x-www-form-urlencoded"),
        (b"other=%7B%7D", "application/x-www-form-urlencoded"),
        (b"payload=%7B%7D&payload=%7B%7D", "application/x-www-form-urlencoded"),
        (b"payload=%5B%5D", "application/x-www-form-urlencoded"),
    ],
    ids=[
        "truncated-json",
        "not-json",
        "json-array",
        "json-string",
        "empty",
        "text-plain",
        "no-content-type",
        "xml",
        "form-truncated-json",
        "form-without-payload",
        "form-two-payloads",
        "form-array",
    ],
)
def test_malformed_bodies_are_400(webhook_app: RunningApp, body: bytes, content_type: str) -> None:
    delivery = str(uuid.uuid4())
    headers = {"Content-Type": content_type or None}
    response = webhook_app.deliver(
        "issue_comment", body, delivery=delivery, content_type=content_type, headers=headers
    )
    assert response.status_code == 400
    assert response.json()["error"]
    assert webhook_app.queued() == {}
    assert not webhook_app.seen(delivery)


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-GitHub-Event", None),
        ("X-GitHub-Delivery", None),
        ("X-GitHub-Event", ""),
        ("X-GitHub-Delivery", "../../etc/passwd"),
        ("X-GitHub-Delivery", "a" * 101),
        ("X-GitHub-Event", "Issue Comment"),
    ],
)
def test_missing_or_malformed_github_headers_are_400(
    webhook_app: RunningApp, corpora: Path, header: str, value: str | None
) -> None:
    response = webhook_app.deliver("issue_comment", comment_body(corpora), headers={header: value})
    assert response.status_code == 400
    assert header.lower() in response.json()["error"].lower()
    assert webhook_app.queued() == {}


def test_form_encoded_payload_is_queued(webhook_app: RunningApp, corpora: Path) -> None:
    raw = comment_body(corpora)
    body = urlencode({"payload": raw.decode()}).encode()
    delivery = str(uuid.uuid4())
    response = webhook_app.deliver(
        "issue_comment",
        body,
        delivery=delivery,
        content_type="application/x-www-form-urlencoded",
    )
    assert (response.status_code, response.json()) == (202, {"queued": True})
    job = webhook_app.job(delivery)
    assert job is not None
    assert job.args == ("issue_comment", delivery, json.loads(raw))


def test_json_with_charset_is_accepted(webhook_app: RunningApp, corpora: Path) -> None:
    response = webhook_app.deliver(
        "issue_comment", comment_body(corpora), content_type="application/json; charset=utf-8"
    )
    assert (response.status_code, response.json()) == (202, {"queued": True})


# --- size limit ------------------------------------------------------------------------

LIMIT = 2048


@pytest.fixture
def small_app(redis_url: str) -> Iterator[RunningApp]:
    with running_app(make_settings(redis_url, max_webhook_bytes=LIMIT)) as running:
        yield running


def padded(size: int) -> bytes:
    """A handled payload of exactly `size` bytes."""
    base = b'{"action": "created", "pad": ""}'
    body = base.replace(b'""', b'"' + b"x" * (size - len(base)) + b'"')
    assert len(body) == size
    return body


def test_body_at_the_limit_is_accepted(small_app: RunningApp) -> None:
    response = small_app.deliver("issue_comment", padded(LIMIT))
    assert (response.status_code, response.json()) == (202, {"queued": True})


def test_body_over_the_limit_is_413(small_app: RunningApp) -> None:
    response = small_app.deliver("issue_comment", padded(LIMIT + 1))
    assert response.status_code == 413
    assert small_app.queued() == {}


def _chunks(body: bytes, size: int = 300) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def test_chunked_upload_without_content_length(small_app: RunningApp) -> None:
    fits = padded(LIMIT)
    request = small_app.client.build_request(
        "POST",
        "/webhooks/github",
        content=_chunks(fits),
        headers={
            "Content-Type": "application/json",
            "X-GitHub-Event": "issue_comment",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": sign(small_app.secret, fits),
        },
    )
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
    assert small_app.client.send(request).status_code == 202

    too_big = padded(LIMIT + 500)
    request = small_app.client.build_request(
        "POST",
        "/webhooks/github",
        content=_chunks(too_big),
        headers={
            "Content-Type": "application/json",
            "X-GitHub-Event": "issue_comment",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": sign(small_app.secret, too_big),
        },
    )
    assert "content-length" not in request.headers
    response = small_app.client.send(request)
    assert response.status_code == 413
    assert len(small_app.queued()) == 1


def _raw_exchange(base_url: str, head: bytes, body: bytes) -> bytes:
    """Send a request head and part of a body, never finishing it; return the answer."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(head + body)
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
        return answer


def _head(app: RunningApp, extra: str) -> bytes:
    return (
        "POST /webhooks/github HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\nX-GitHub-Event: issue_comment\r\n"
        f"X-GitHub-Delivery: {uuid.uuid4()}\r\nX-Hub-Signature-256: sha256={'0' * 64}\r\n"
        f"{extra}\r\n"
    ).encode()


def test_declared_length_over_the_limit_is_refused_before_reading(small_app: RunningApp) -> None:
    # The body never arrives: a server waiting for it would time the client out instead.
    answer = _raw_exchange(
        small_app.base_url, _head(small_app, "Content-Length: 10000000000\r\n"), b""
    )
    assert answer.startswith(b"HTTP/1.1 413")


def test_chunked_stream_is_cut_at_the_limit(small_app: RunningApp) -> None:
    chunk = b"x" * 1000
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(3))  # never terminated
    answer = _raw_exchange(
        small_app.base_url, _head(small_app, "Transfer-Encoding: chunked\r\n"), body
    )
    assert answer.startswith(b"HTTP/1.1 413")


# --- Redis -----------------------------------------------------------------------------


def test_healthz_reports_redis_ok(webhook_app: RunningApp) -> None:
    response = webhook_app.client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"redis": "ok"})


def test_redis_down_gives_503_without_traceback(corpora: Path) -> None:
    settings = make_settings(f"redis://127.0.0.1:{free_port()}/0")
    with running_app(settings) as app:
        health = app.client.get("/healthz")
        assert health.status_code == 503
        assert health.json()["redis"].startswith("error: ")
        delivery = str(uuid.uuid4())
        response = app.deliver("issue_comment", comment_body(corpora), delivery=delivery)
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/json"
        assert "Redis" in response.json()["error"]
        assert "Traceback" not in response.text
        # Answers that need no Redis still work.
        ping = app.deliver("ping", json.dumps({"zen": "Keep it logically awesome."}).encode())
        assert (ping.status_code, ping.json()) == (200, {"pong": True})


@pytest.fixture
def own_redis() -> Iterator[tuple[int, list[subprocess.Popen[bytes]]]]:
    """A port for a private redis-server; the test starts (and stops) it there."""
    started: list[subprocess.Popen[bytes]] = []
    yield free_port(), started
    for process in started:
        process.terminate()
        process.wait(timeout=10)


def _start_redis(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    client.close()
    return process


def test_app_recovers_when_redis_comes_and_goes(
    own_redis: tuple[int, list[subprocess.Popen[bytes]]], corpora: Path
) -> None:
    port, started = own_redis
    body = comment_body(corpora)
    with running_app(make_settings(f"redis://127.0.0.1:{port}/0")) as app:
        assert app.deliver("issue_comment", body).status_code == 503

        started.append(_start_redis(port))
        assert app.client.get("/healthz").status_code == 200
        delivery = str(uuid.uuid4())
        assert app.deliver("issue_comment", body, delivery=delivery).status_code == 202
        assert app.job(delivery) is not None

        started[0].terminate()
        started[0].wait(timeout=10)
        assert app.deliver("issue_comment", body).status_code == 503
        assert app.client.get("/healthz").status_code == 503

        started.append(_start_redis(port))
        assert app.deliver("issue_comment", body).status_code == 202


# --- settings --------------------------------------------------------------------------


def test_app_refuses_to_start_without_a_webhook_secret(redis_url: str) -> None:
    for secret in (None, SecretStr("")):
        settings = make_settings(redis_url, webhook_secret=secret)
        with pytest.raises(SettingsError, match="TRIMO_WEBHOOK_SECRET"):
            create_app(settings)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No `TRIMO_*` variables and no `.env` in the working directory."""
    for name in list(os.environ):
        if name.upper().startswith("TRIMO_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_settings_from_environment_and_dotenv(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch = clean_env
    (tmp_path / ".env").write_text("TRIMO_WEBHOOK_SECRET=from-dotenv\nTRIMO_APP_SLUG=dotenv-slug\n")
    monkeypatch.setenv("TRIMO_APP_SLUG", "env-slug")
    monkeypatch.setenv("TRIMO_GITHUB_APP_ID", "12345")
    monkeypatch.setenv("TRIMO_MAX_WEBHOOK_BYTES", "4096")
    monkeypatch.setenv(
        "TRIMO_POLICY_ALLOWED_IMAGES", " trimo-agent:latest, registry.example.com/x/y:1 ,"
    )
    settings = AppSettings()
    assert settings.require_webhook_secret() == "from-dotenv"
    assert "from-dotenv" not in repr(settings)
    assert settings.app_slug == "env-slug"
    assert settings.github_app_id == 12345
    assert settings.max_webhook_bytes == 4096
    assert settings.allowed_images() == {"trimo-agent:latest", "registry.example.com/x/y:1"}


@pytest.mark.usefixtures("clean_env")
def test_settings_defaults() -> None:
    settings = AppSettings()
    assert settings.github_api_url == "https://api.github.com"
    assert settings.app_slug == "trimo"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.max_webhook_bytes == 25 * 1024 * 1024
    assert settings.policy_max_timeout_minutes == 120
    assert settings.allowed_images() == frozenset()
    assert settings.allowed_networks() == {"none", "allowlist", "bridge"}
    assert settings.allowed_hosts() == []
    assert settings.default_image == "trimo-agent:latest"
    assert settings.webhook_secret is None


PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----\n"


def test_private_key_from_value_file_or_neither(tmp_path: Path) -> None:
    inline = AppSettings(_env_file=None, github_private_key=SecretStr(PEM))
    assert inline.private_key() == PEM
    escaped = AppSettings(_env_file=None, github_private_key=SecretStr(PEM.replace("\n", "\\n")))
    assert escaped.private_key() == PEM

    key_file = tmp_path / "app.pem"
    key_file.write_text(PEM)
    assert AppSettings(_env_file=None, github_private_key_path=key_file).private_key() == PEM

    missing = AppSettings(_env_file=None, github_private_key_path=tmp_path / "absent.pem")
    with pytest.raises(SettingsError, match=r"absent\.pem"):
        missing.private_key()
    with pytest.raises(SettingsError, match="TRIMO_GITHUB_PRIVATE_KEY"):
        AppSettings(_env_file=None).private_key()


def test_only_post_on_the_webhook_route(redis_url: str) -> None:
    with serve_in_thread(create_app(make_settings(redis_url))) as base_url:
        assert httpx.get(f"{base_url}/webhooks/github").status_code == 405
        assert httpx.post(f"{base_url}/healthz").status_code == 405
