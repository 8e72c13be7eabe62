"""Two App instances behind Caddy with deploy/Caddyfile: restarting them one at a time under
a steady stream of webhooks loses none (each answered 2xx, each in Redis)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from app.edge.web import delivery_key
from tests.fakegithub import generate_key_pair
from tests.webhook_helpers import SECRET, free_port, sign

pytestmark = pytest.mark.redis
CADDYFILE = Path(__file__).resolve().parent.parent / "deploy" / "Caddyfile"


def caddy() -> str:
    found = shutil.which("caddy")
    if found is None:
        pytest.fail("caddy is required: Debian's `caddy` (scripts/services.sh installs it)")
    return found


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{url} did not answer"
        time.sleep(0.05)


class Instances:
    """`trimo serve` processes sharing one Redis, each on its own port."""

    def __init__(self, redis_url: str, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRIMO_")}
        self.env = {
            **env,
            "TRIMO_REDIS_URL": redis_url,
            "TRIMO_GITHUB_APP_ID": "1",
            "TRIMO_GITHUB_PRIVATE_KEY": generate_key_pair()[0],
            "TRIMO_WEBHOOK_SECRET": SECRET,
            "TRIMO_GITHUB_API_URL": "http://127.0.0.1:9",  # nothing listens: GitHub is away
            "TRIMO_LOG_FORMAT": "json",
            "TRIMO_STOP_UNREADY_SECONDS": "3",  # as deploy/README.md says behind Caddy
        }
        self.ports = [free_port(), free_port()]
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, index: int) -> subprocess.Popen[bytes]:
        log = self.tmp_path / f"serve-{index}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.ops.cli", "serve"],
            env={**self.env, "TRIMO_PORT": str(self.ports[index])},
            cwd=self.tmp_path, stdout=log.open("ab"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_healthy(f"http://127.0.0.1:{self.ports[index]}/healthz", proc, log)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=60)


@pytest.fixture
def instances(redis_url: str, tmp_path: Path) -> Iterator[Instances]:
    found = Instances(redis_url, tmp_path)
    try:
        found.procs = [found.start(0), found.start(1)]
        yield found
    finally:
        found.stop_all()


@pytest.fixture
def front(instances: Instances, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = tmp_path / "caddy.log"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "XDG_DATA_HOME": str(tmp_path / "caddy-data"),
        "XDG_CONFIG_HOME": str(tmp_path / "caddy-config"),
        "TRIMO_CADDY_ADMIN": "off",
        "TRIMO_SITE": f"http://127.0.0.1:{port}",
        "TRIMO_UPSTREAMS": " ".join(f"127.0.0.1:{p}" for p in instances.ports),
    }
    proc = subprocess.Popen(
        [caddy(), "run", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
        env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_healthy(f"http://127.0.0.1:{port}/healthz", proc, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_rolling_restart_behind_caddy_loses_no_webhook(
    instances: Instances, front: str, redis_url: str, corpora: Path
) -> None:
    body = (corpora / "webhooks" / "issue_comment.created.1.json").read_bytes()
    answers: list[tuple[str, float, int | str]] = []
    done = threading.Event()

    def send() -> None:
        with httpx.Client(base_url=front, timeout=30) as client:
            while not done.is_set():
                delivery = str(uuid.uuid4())
                headers = {
                    "X-GitHub-Event": "issue_comment",
                    "X-GitHub-Delivery": delivery,
                    "X-Hub-Signature-256": sign(SECRET, body),
                    "Content-Type": "application/json",
                }
                try:
                    status: int | str = client.post(
                        "/webhooks/github", content=body, headers=headers
                    ).status_code
                except httpx.HTTPError as exc:
                    status = repr(exc)
                answers.append((delivery, time.monotonic(), status))

    sender = threading.Thread(target=send)
    sender.start()
    down: list[tuple[float, float]] = []
    try:
        for index in (0, 1):
            began = time.monotonic()
            instances.procs[index].send_signal(signal.SIGTERM)
            assert instances.procs[index].wait(timeout=60) == 0
            log = instances.tmp_path / f"serve-{index}.log"
            offset = log.stat().st_size
            instances.procs[index] = instances.start(index)
            down.append((began, time.monotonic()))
            # As an operator would: the next instance stops once Caddy sends this one
            # requests again (its health check has seen it), not merely when it is up.
            deadline = time.monotonic() + 30
            while "queued delivery" not in log.read_text(errors="replace")[offset:]:
                assert time.monotonic() < deadline, "Caddy sent the new instance nothing"
                time.sleep(0.05)
        count = len(answers)
        deadline = time.monotonic() + 30
        while len(answers) < count + 20:  # and a few more after both are back
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        done.set()
        sender.join(timeout=60)

    lost = [(delivery, status) for delivery, _at, status in answers if status != 202]
    assert not lost, f"{len(lost)} of {len(answers)} webhooks lost: {lost[:5]}"
    during = [at for _d, at, _s in answers if any(a <= at <= b for a, b in down)]
    assert len(during) >= 20, (len(during), len(answers))  # the restarts were under load
    client = redis.Redis.from_url(redis_url)
    try:
        missing = [d for d, _at, _s in answers if not client.exists(delivery_key(d))]
    finally:
        client.close()
    assert not missing, f"{len(missing)} accepted but not in Redis"
