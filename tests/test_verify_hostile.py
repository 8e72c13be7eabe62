"""Verify's output and time are the agent's to abuse: both are bounded (real Docker)."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import docker
import pytest

from runner.container import LABEL_RUN
from runner.engine import StopSignal
from runner.job import Outcome, RunRequest, VerifyCheck
from runner.verify import LABEL_VERIFY, TAIL_CHARS, proxy_id
from tests.engine_helpers import make_request, run

pytestmark = pytest.mark.docker

GREET = "echo hi > hello.txt && git add hello.txt && git commit -qm 'Say hi'"


def test_a_check_that_never_ends_is_stopped_at_its_limit(sample_repo: Path, cache: Path) -> None:
    hang = VerifyCheck(name="tests", run="echo starting; trap '' TERM; sleep 300")
    after = VerifyCheck(name="lint", run="true")
    request = make_request(sample_repo, GREET, verify=[hang, after], verify_timeout_s=2)
    began = time.monotonic()
    finished, _ = run(cache, request, stop_grace_seconds=1)

    assert time.monotonic() - began < 60
    assert finished.outcome is Outcome.FAILURE
    assert finished.reason == "checks failing: tests"
    report = finished.verify
    assert report is not None
    tests, lint = report.checks
    assert tests.timed_out and not tests.passed and "2-minute" not in tests.problem
    assert "limit" in tests.problem and tests.log_tail == "starting"
    assert lint.passed


def test_a_flood_of_output_reaches_people_as_a_short_printable_tail(
    sample_repo: Path, cache: Path
) -> None:
    """200 MB in one line, then escape sequences that would retitle a terminal or plant a
    link, then the check's last words: what is kept is the end, printable and capped."""
    flood = (
        "head -c 200000000 /dev/zero | tr '\\0' x; echo; "
        "printf '\\033]0;owned\\007\\033[31mred\\033]8;;https://example.com\\033\\\\link\\n'; "
        "echo 'FAILED: 1 test'; exit 1"
    )
    request = make_request(
        sample_repo, GREET, verify=[VerifyCheck(name="tests", run=flood)], verify_timeout_s=120
    )
    finished, _ = run(cache, request)

    assert finished.outcome is Outcome.FAILURE
    report = finished.verify
    assert report is not None
    tail = report.checks[0].log_tail
    assert len(tail) <= TAIL_CHARS
    assert tail.endswith("redlink\nFAILED: 1 test")
    assert "\x1b" not in tail and "\x07" not in tail


def test_stopping_the_run_stops_its_checks(
    sample_repo: Path, cache: Path, docker_client: docker.DockerClient
) -> None:
    stop = StopSignal()
    hang = VerifyCheck(name="tests", run="sleep 300")
    request = make_request(sample_repo, GREET, verify=[hang, hang.model_copy(update={"name": "b"})])

    def stop_once_a_check_runs() -> None:
        labels = [f"{LABEL_RUN}={request.run_id}", LABEL_VERIFY]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if docker_client.containers.list(filters={"label": labels, "status": "running"}):
                stop.stop("stopped by a person")
                return
            time.sleep(0.1)

    stopper = threading.Thread(target=stop_once_a_check_runs, daemon=True)
    stopper.start()
    began = time.monotonic()
    finished, _ = run(cache, request, stop, stop_grace_seconds=1)
    stopper.join(timeout=10)

    assert time.monotonic() - began < 60
    assert (finished.outcome, finished.reason) == (Outcome.CANCELLED, "stopped by a person")
    report = finished.verify
    assert report is not None and not report.passed
    assert [c.problem for c in report.checks] == ["stopped with the run", "not run"]
    assert not docker_client.containers.list(all=True, filters={"label": labels_of(request)})


def labels_of(request: RunRequest) -> list[str]:
    return [f"{LABEL_RUN}={request.run_id}"]


def test_a_run_id_of_the_longest_kind_still_gets_its_checks_a_proxy(
    sample_repo: Path, cache: Path
) -> None:
    """The egress proxy takes ids of at most 100 characters, as long as a run id may be."""
    run_id = "o." + "r" * 88 + ".12-abcdef"
    assert len(run_id) == 100 and proxy_id(run_id) != proxy_id(run_id[:-1])
    check = VerifyCheck(name="tests", run="grep -qx hi hello.txt")
    leak = VerifyCheck(name="leak", run="echo $HTTPS_PROXY; exit 1")
    request = make_request(
        sample_repo, GREET, run_id=run_id, network="allowlist", verify=[check, leak]
    )
    finished, _ = run(cache, request)
    assert finished.verify is not None and finished.verify.failing == ["leak"], finished.verify
    assert len(proxy_id(run_id)) <= 100
    # The check's proxy credential (in its environment) is scrubbed from what it printed.
    printed = finished.verify.checks[1].log_tail
    assert re.fullmatch(r"http://run:\*\*\*@[0-9.]+:[0-9]+", printed), printed
