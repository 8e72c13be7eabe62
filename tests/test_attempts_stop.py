"""Stopping `trimo run --attempts` stops every attempt, saves each one's work, and still
ranks them; killing it leaves the set on record and the work for the next command to save:
real git, real Docker, the script agent."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import git
from tests.test_cli import start_trimo, trimo

WORK = "echo $RANDOM > work.txt && git add -A && git commit -qm Work && echo started && sleep 120"


class Output:
    """Everything `proc` prints, read in a thread (a silent process cannot hang the test)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.reader.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, wanted: list[str], seconds: float = 120) -> None:
        deadline = time.monotonic() + seconds
        while not all(w in self.text() for w in wanted):
            assert time.monotonic() < deadline, f"never printed {wanted}:\n{self.text()}"
            time.sleep(0.1)


@pytest.mark.docker
def test_sigterm_stops_every_attempt_and_saves_each_ones_work(
    sample_repo: Path, tmp_path: Path, test_image: str
) -> None:
    proc = start_trimo(
        "run", "--pipeline", "s", "--attempts", "2", "--no-verify", WORK,
        cache=tmp_path / "cache", cwd=sample_repo,
    )  # fmt: skip
    output = Output(proc)
    try:
        output.wait_for(["1│  started", "2│  started"])
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    output.reader.join(timeout=30)
    rest = output.text()
    assert proc.returncode == 130, rest
    assert rest.count("stopped by SIGTERM") == 2, rest
    assert "cancelled" in rest and "Keep one: trimo pick s 1" in rest
    for number in (1, 2):
        subject = git(sample_repo, "log", "-1", "--format=%s", f"trimo/s-attempt-{number}")
        assert subject == "Work", "each attempt's work is saved on its branch"


@pytest.mark.docker
def test_a_killed_trimo_run_leaves_its_attempts_known_and_their_work_saved(
    sample_repo: Path, tmp_path: Path, test_image: str
) -> None:
    """kill -9: no ranking, but the set is on record (its numbers stay taken), a pick says
    how to keep a branch by hand, and the next trimo command saves each attempt's work."""
    cache = tmp_path / "cache"
    proc = start_trimo(
        "run", "--pipeline", "k", "--attempts", "2", "--no-verify", WORK,
        cache=cache, cwd=sample_repo,
    )  # fmt: skip
    output = Output(proc)
    try:
        output.wait_for(["1│  started", "2│  started"])
    finally:
        proc.kill()
        proc.wait(30)
    picked = trimo("pick", "k", "1", "--repo", str(sample_repo), cache=cache)
    said = " ".join(picked.stderr.split())
    assert picked.returncode == 1 and "Attempt 1 has not ended in its trimo run" in said, said
    assert "git branch -f trimo/k trimo/k-attempt-1" in said
    listing = trimo("pipelines", "--repo", str(sample_repo), cache=cache)
    assert "attempts 1–2: 1 running, 2 running; none kept yet" in listing.stdout

    doctor = trimo("doctor", cache=cache, cwd=sample_repo)
    assert doctor.stdout.count("Saved the work of run k-a") == 2, doctor.stdout
    for number in (1, 2):
        subject = git(sample_repo, "log", "-1", "--format=%s", f"trimo/k-attempt-{number}")
        assert subject == "Work", "each attempt's work is saved on its branch"
