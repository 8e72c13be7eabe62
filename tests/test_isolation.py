"""What the agent can and cannot do inside its container (real Docker)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runner.job import Outcome, Resources
from tests.engine_helpers import make_request, run

pytestmark = pytest.mark.docker

CANARY = "TRIMO_TEST_HOST_CANARY"


def probe(sample_repo: Path, cache: Path, script: str, **overrides: object) -> str:
    finished, events = run(cache, make_request(sample_repo, script, **overrides))
    assert finished.outcome is Outcome.SUCCESS, finished.reason
    return events.text()


def test_agent_is_not_root_and_has_no_capabilities(sample_repo: Path, cache: Path) -> None:
    out = probe(
        sample_repo, cache, "echo uid=$(id -u); grep -E '^Cap(Eff|Prm|Bnd)' /proc/self/status"
    )
    assert "uid=1000" in out
    for field in ("CapEff", "CapPrm", "CapBnd"):
        assert f"{field}:\t0000000000000000" in out


def test_no_new_privileges_and_limits_are_set(sample_repo: Path, cache: Path) -> None:
    out = probe(
        sample_repo, cache, "grep NoNewPrivs /proc/self/status; cat /sys/fs/cgroup/pids/pids.max"
    )
    assert "NoNewPrivs:\t1" in out
    assert "128" in out


def test_host_environment_and_processes_are_invisible(
    sample_repo: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CANARY, "host-secret-value")
    assert os.environ[CANARY] == "host-secret-value"
    out = probe(sample_repo, cache, "env; echo PROCS; ps -e -o comm=")
    assert CANARY not in out and "host-secret-value" not in out
    processes = out.split("PROCS", 1)[1].split()
    assert "pytest" not in " ".join(processes)
    assert len(processes) <= 5, processes  # init, bash, ps


def test_network_none_leaves_only_loopback(sample_repo: Path, cache: Path) -> None:
    out = probe(sample_repo, cache, "ip -o link show | awk -F': ' '{print \"LINK=\" $2}'")
    links = [ln.split("=", 1)[1] for ln in out.splitlines() if ln.startswith("LINK=")]
    assert links == ["lo"]


def test_bridge_network_has_an_interface(sample_repo: Path, cache: Path) -> None:
    out = probe(
        sample_repo,
        cache,
        "ip -o link show | awk -F': ' '{print \"LINK=\" $2}'",
        network="bridge",
    )
    links = [ln.split("=", 1)[1] for ln in out.splitlines() if ln.startswith("LINK=")]
    assert "lo" in links and len(links) >= 2


def test_fork_bomb_is_held_by_the_process_limit(sample_repo: Path, cache: Path) -> None:
    # Only bash builtins after the bomb: every process slot is taken by then.
    script = (
        "bomb() { bomb | bomb & }; bomb; "
        "for i in {1..300000}; do :; done; "
        "read -r cur < /sys/fs/cgroup/pids/pids.current; "
        "read -r max < /sys/fs/cgroup/pids/pids.max; "
        'echo "PIDS=$cur MAX=$max"; kill -9 -1; exit 0'
    )
    limits = Resources(memory="256m", cpus=1.0, pids=64)
    finished, events = run(cache, make_request(sample_repo, script, resources=limits, timeout_s=60))
    line = next(ln for ln in events.text().splitlines() if ln.startswith("PIDS="))
    current, maximum = (int(part.split("=")[1]) for part in line.split())
    assert maximum == 64
    # The bomb filled the limit and was held there. Each `docker exec` of the runner (the push
    # loop's) joins the cgroup without forking inside it, so on a slow machine a few of them can
    # stand over the limit; without the limit the bomb counts thousands.
    assert 32 <= current <= maximum + 8
    assert finished.outcome is Outcome.SUCCESS, finished.reason


def test_memory_hog_is_killed_and_reported_as_out_of_memory(sample_repo: Path, cache: Path) -> None:
    finished, _ = run(
        cache,
        make_request(
            sample_repo,
            "echo saved > before-oom.txt; tail /dev/zero",
            resources=Resources(memory="64m", cpus=1.0, pids=64),
            timeout_s=60,
        ),
    )
    assert finished.outcome is Outcome.FAILURE
    assert "out of memory" in finished.reason
    assert "64m" in finished.reason
