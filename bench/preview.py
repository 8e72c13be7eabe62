"""From a `/trimo preview` comment to the preview comment saying "ready", for a trivial app.

    PYTHONPATH=. python bench/preview.py [--rounds 5]

Starts the GitHub stand-in, a private redis-server, `trimo serve` and `trimo runner`
with previews on (real Docker, the base image, a tiny Perl web app on the pipeline's
branch). Each round stops the preview, then times a signed `/trimo preview` comment until
the one preview comment holds the link. The baseline is the app's own start-up: a bare
`docker run` of the same image and app until it answers HTTP. The target is under 3 s
beyond that baseline.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import docker

from tests import preview_app
from tests.conftest import CORPORA
from tests.fakegithub import RunningFakeGitHub
from tests.loop_harness import CONFIG, Loop
from tests.webhook_helpers import free_port

IMAGE = "trimo-agent:base"
TARGET_SECONDS = 3.0
READY = ("Preview ready", "Preview refreshed")
"""`refreshed` when the runner had not stopped the last round's preview yet (same link)."""
CONFIG_WITH_PREVIEW = (
    CONFIG + f"preview:\n  command: {preview_app.COMMAND}\n  port: 8000\n  idle_minutes: 5\n"
)


def app_start_up(workdir: Path) -> float:
    """A bare `docker run` of the app, until it answers: what the app costs on its own."""
    app = workdir / "bare-app"
    app.mkdir(exist_ok=True)
    for name, text in preview_app.files("bare").items():
        (app / name).write_text(text)
    client = docker.from_env()
    t0 = time.perf_counter()
    container = client.containers.run(
        IMAGE, ["perl", "server.pl"], entrypoint=[], working_dir="/app", detach=True,
        volumes={str(app): {"bind": "/app", "mode": "ro"}}, environment={"PORT": "8000"},
    )  # fmt: skip
    try:
        container.reload()
        address = container.attrs["NetworkSettings"]["IPAddress"]
        while True:
            try:
                with socket.create_connection((address, 8000), timeout=1) as sock:
                    sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
                    if sock.recv(5) == b"HTTP/":
                        return time.perf_counter() - t0
            except OSError:
                time.sleep(0.01)
    finally:
        container.remove(force=True)


def says(loop: Loop, number: int, *texts: str) -> bool:
    return any(text in body for body in loop.bot_comments(number) for text in texts)


def first_run_done(loop: Loop) -> bool:
    return any(c.name == "Trimo" and c.status == "completed" for c in loop.check_runs())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    port, preview_port = free_port(), free_port()
    workdir = Path(tempfile.mkdtemp(prefix="trimo-bench-"))
    redis = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(0.5)
    env = {
        "TRIMO_RUNNER_PREVIEW_URL": f"http://127.0.0.1:{preview_port}",
        "TRIMO_RUNNER_PREVIEW_LISTEN": f"127.0.0.1:{preview_port}",
    }
    files = {**preview_app.files("bench"), ".github/trimo.yml": CONFIG_WITH_PREVIEW}
    try:
        baseline = statistics.median(app_start_up(workdir) for _ in range(args.rounds))
        with RunningFakeGitHub() as gh:
            loop = Loop(gh, f"redis://127.0.0.1:{port}/0", workdir, CORPORA, files, env).start()
            try:
                number = loop.new_issue("bench previews")
                loop.comment(
                    number, "/trimo run echo '<h1>bench</h1>' > index.html && git commit -qam page"
                )
                loop.wait(lambda: first_run_done(loop), 120, "the first run")
                samples = []
                for n in range(args.rounds + 1):  # the first round warms the mirror up
                    t0 = time.perf_counter()
                    loop.comment(number, "/trimo preview")
                    loop.wait(lambda: says(loop, number, *READY), 120, "the preview")
                    if n:
                        samples.append(time.perf_counter() - t0)
                    loop.comment(number, "/trimo preview stop")
                    loop.wait(lambda: says(loop, number, "Preview stopped"), 60, "the stop")
            finally:
                loop.stop()
        median = statistics.median(samples)
        print(f"{args.rounds} rounds, the base image, a Perl web app, network allowlist:")
        print(f"  baseline, bare docker run until the app answers: {baseline:.3f} s")
        print(f"  /trimo preview comment → comment with the link:  p50 {median:.3f} s, "
              f"max {max(samples):.3f} s")  # fmt: skip
        overhead = median - baseline
        verdict = "met" if overhead < TARGET_SECONDS else "MISSED"
        target = f"target < {TARGET_SECONDS:.0f} s: {verdict}"
        print(f"  beyond the app's own start-up: {overhead:.3f} s ({target})")
    finally:
        redis.terminate()


if __name__ == "__main__":
    main()
