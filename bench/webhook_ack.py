"""Webhook ack latency: signed deliveries at a steady rate against the real App and Redis.

Starts `uvicorn --factory app.edge.web:app_from_env` in a subprocess, sends `--rate` deliveries a
second for `--seconds` from an asyncio httpx client with a pacing loop, prints latency
percentiles (measured from each delivery's scheduled send time, so client lag counts too)
and errors, then checks in Redis that every delivery was queued exactly once and that
redeliveries are not queued again. Only this run's keys are touched, and removed at the end.

    .venv/bin/python bench/webhook_ack.py --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
QUEUE = "trimo:app"
DEFAULT_PAYLOAD = "issue_comment.created.1.json"


def corpora_dir() -> Path:
    beside = ROOT.parent / "shared" / "corpora"
    return (
        beside if beside.is_dir() else Path(os.environ.get("TRIMO_CORPORA", "/work/shared/corpora"))
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class Results:
    latencies_ms: list[float] = field(default_factory=list)
    lag_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    delivered: list[str] = field(default_factory=list)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def start_server(port: int, secret: str, redis_url: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, TRIMO_WEBHOOK_SECRET=secret, TRIMO_REDIS_URL=redis_url)
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "app.edge.web:app_from_env",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    server = subprocess.Popen(command, cwd=ROOT, env=env)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the App exited with {server.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.terminate()
    raise SystemExit("the App did not become healthy (is Redis running?)")


async def send(
    client: httpx.AsyncClient,
    body: bytes,
    headers: dict[str, str],
    scheduled: float,
    results: Results,
) -> None:
    try:
        response = await client.post("/webhooks/github", content=body, headers=headers)
    except httpx.HTTPError as exc:
        results.error(type(exc).__name__)
        return
    results.latencies_ms.append((time.perf_counter() - scheduled) * 1000)
    if response.status_code != 202 or response.json() != {"queued": True}:
        results.error(f"HTTP {response.status_code} {response.text[:80]}")
    else:
        results.delivered.append(headers["X-GitHub-Delivery"])


def delivery_headers(delivery: str, signature: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": "issue_comment",
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": signature,
        "User-Agent": "GitHub-Hookshot/bench",
    }


async def load(
    base_url: str, body: bytes, secret: str, run: str, rate: float, seconds: float
) -> tuple[Results, list[str]]:
    """Send `rate` deliveries a second for `seconds`; returns results and all delivery ids."""
    results = Results()
    signature = sign(secret, body)
    total = int(rate * seconds)
    deliveries = [f"bench-{run}-{i}" for i in range(total)]
    limits = httpx.Limits(max_connections=128, max_keepalive_connections=128)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=10) as client:
        tasks: list[asyncio.Task[None]] = []
        start = time.perf_counter() + 0.05
        for i, delivery in enumerate(deliveries):
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            results.lag_ms.append(max(0.0, time.perf_counter() - scheduled) * 1000)
            headers = delivery_headers(delivery, signature)
            tasks.append(asyncio.create_task(send(client, body, headers, scheduled, results)))
        await asyncio.gather(*tasks)
        # Redeliveries of a sample must be answered as duplicates and queue nothing.
        for delivery in deliveries[:: max(1, total // 50)]:
            again = await client.post(
                "/webhooks/github", content=body, headers=delivery_headers(delivery, signature)
            )
            if again.status_code != 202 or again.json() != {"duplicate": True}:
                results.error(f"redelivery answered {again.status_code} {again.text[:80]}")
    return results, deliveries


def check_queue(client: redis.Redis, deliveries: list[str], run: str) -> list[str]:
    """Problems with the queue: every delivery queued once, nothing else of this run."""
    problems: list[str] = []
    pipe = client.pipeline(transaction=False)
    for delivery in deliveries:
        pipe.zscore(QUEUE, f"gh-{delivery}")
        pipe.exists(f"arq:job:gh-{delivery}")
    answers = pipe.execute()
    in_queue = sum(score is not None for score in answers[0::2])
    job_keys = sum(int(found) for found in answers[1::2])
    ours = [m for m in client.zrange(QUEUE, 0, -1) if m.decode().startswith(f"gh-bench-{run}-")]
    if in_queue != len(deliveries) or job_keys != len(deliveries):
        problems.append(
            f"{len(deliveries)} sent, {in_queue} in the queue, {job_keys} job keys (want equal)"
        )
    if len(ours) != len(deliveries):
        problems.append(f"{len(ours)} queue entries for this run, want {len(deliveries)}")
    return problems


def cleanup(client: redis.Redis, deliveries: list[str]) -> None:
    pipe = client.pipeline(transaction=False)
    for delivery in deliveries:
        pipe.zrem(QUEUE, f"gh-{delivery}")
        pipe.delete(f"arq:job:gh-{delivery}", f"trimo:delivery:{delivery}")
    pipe.execute()


def report(results: Results, seconds: float, sent: int) -> None:
    lat = results.latencies_ms
    print(f"sent {sent} deliveries in {seconds:.0f} s ({sent / seconds:.0f}/s)")
    if lat:
        print(
            "ack latency ms: "
            f"p50 {percentile(lat, 50):.2f}  p95 {percentile(lat, 95):.2f}  "
            f"p99 {percentile(lat, 99):.2f}  max {max(lat):.2f}"
        )
    print(f"client pacing lag ms: max {max(results.lag_ms, default=0):.2f}")
    print(f"errors: {sum(results.errors.values())}")
    for kind, count in sorted(results.errors.items()):
        print(f"  {count} x {kind}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rate", type=float, default=200, help="deliveries per second")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    parser.add_argument(
        "--payload", type=Path, default=corpora_dir() / "webhooks" / DEFAULT_PAYLOAD
    )
    args = parser.parse_args()

    body = args.payload.read_bytes()
    secret = secrets.token_hex(16)
    run = secrets.token_hex(4)
    port = free_port()
    client = redis.Redis.from_url(args.redis_url)
    server = start_server(port, secret, args.redis_url)
    deliveries: list[str] = []
    try:
        results, deliveries = asyncio.run(
            load(f"http://127.0.0.1:{port}", body, secret, run, args.rate, args.seconds)
        )
        report(results, args.seconds, len(deliveries))
        problems = check_queue(client, deliveries, run)
        print(f"body {len(body)} bytes; server pid {server.pid}; redis {args.redis_url}")
        for problem in problems:
            print(f"QUEUE CHECK FAILED: {problem}")
        if not problems:
            print(f"queue check: all {len(deliveries)} deliveries queued exactly once")
        return 1 if problems or results.errors else 0
    finally:
        server.terminate()
        server.wait(timeout=10)
        cleanup(client, deliveries)
        client.close()


if __name__ == "__main__":
    sys.exit(main())
