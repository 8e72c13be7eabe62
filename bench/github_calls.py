"""What one call to GitHub costs the App: CPU and time, over TLS on loopback.

    python bench/github_calls.py [--calls 200]

A local HTTPS server with a throwaway certificate answers `GET /app` (HTTP/1.1, kept
alive). The App's `GitHubApp` makes `--calls` calls in turn, then eight at a time; the
baseline is githubkit as the App used it before `app.github.transport` (a new client, TLS
context and connection per call). Printed: CPU milliseconds and wall milliseconds per
call, and the connections the server saw. Loopback has no latency: against GitHub each
connection saved is also a TCP and TLS handshake's round trips.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis.asyncio as aioredis
from githubkit import AppAuthStrategy, GitHub
from pydantic import SecretStr

from app.github.client import GitHubApp
from tests.fakegithub.counting import CountingGitHub
from tests.fakegithub.runner import generate_key_pair
from tests.webhook_helpers import make_settings


def certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def measure(
    call: Callable[[], Awaitable[object]], calls: int, at_once: int
) -> tuple[float, float]:
    """CPU ms and wall ms per call, `at_once` calls in flight."""
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(calls // at_once):
        await asyncio.gather(*(call() for _ in range(at_once)))
    per = 1000 / calls
    return (time.process_time() - cpu) * per, (time.perf_counter() - wall) * per


async def main(calls: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        cert, key = certificate(Path(scratch))
        os.environ["SSL_CERT_FILE"] = str(cert)  # httpx trusts it (trust_env)
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(cert, key)
        server = CountingGitHub()
        listening = await asyncio.start_server(server.serve, "127.0.0.1", 0, ssl=tls)
        url = f"https://localhost:{listening.sockets[0].getsockname()[1]}"
        pem, _public = generate_key_pair()
        settings = make_settings(
            "redis://127.0.0.1:1/0", github_app_id=1, github_private_key=SecretStr(pem),
            github_api_url=url,
        )  # fmt: skip
        app = GitHubApp(settings, aioredis.Redis(), auto_retry=False, timeout=10)
        before = GitHub(AppAuthStrategy(1, pem), base_url=url, http_cache=False, auto_retry=False)

        async def baseline() -> None:
            await before.arequest("GET", "/app")

        print(f"{calls} calls to GitHub over TLS on loopback, per call:")
        print(f"  {'':30} {'CPU ms':>8} {'wall ms':>8} {'connections':>12}")
        ways = (("before (new client)", baseline), ("now (shared pool)", app.identity))
        for at_once in (1, 8):
            for name, call in ways:
                opened = server.connections
                cpu, wall = await measure(call, calls, at_once)
                print(f"  {name + f', {at_once} at once':30} {cpu:8.2f} {wall:8.2f} "
                      f"{server.connections - opened:12d}")  # fmt: skip
        listening.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    asyncio.run(main(parser.parse_args().calls))
