"""A setup that fails or runs out of time ends the run like a failed run, with its last
lines, and leaves nothing behind: the agent never starts and the next run sets up again.
Past TRIMO_SETUP_CACHE_MAX the least recently used entry goes, never one in use."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import docker

from runner.container import LABEL_RUNNER
from runner.engine import StopSignal
from runner.job import Outcome
from runner.setup.build import LABEL_SETUP
from runner.setup.spec import SetupSpec
from runner.setup.store import SIZE_NAME, USE_LOCK, Store
from tests.conftest import git
from tests.engine_helpers import RUNNER_ID, make_request, run
from tests.test_setup_cache import SETUP, SHOW, lines, with_lock

AGENT = "echo the-agent-started"
NOT_IGNORED = "the setup keeps `{path}`, which the repository's .gitignore does not list"


def entries(cache: Path) -> list[Path]:
    return [entry for _, _, entry in Store(cache / "setup", "any").entries()]


def leftovers(cache: Path) -> list[Path]:
    """Half-made entries or trash left in the cache."""
    return [p for p in (cache / "setup").glob(".*/**/*") if p.is_file()]


def test_a_failing_setup_fails_the_run_with_its_last_lines_and_keeps_nothing(
    sample_repo: Path, cache: Path
) -> None:
    failing = SETUP.model_copy(
        update={"run": "mkdir -p deps/pkg; echo half > deps/pkg/version; echo 'npm ERR! ```'; "
                       "echo gone-wrong >&2; exit 3"}
    )  # fmt: skip
    repo = with_lock(sample_repo, "v1")
    finished, recorder = run(cache, make_request(repo, AGENT, "p1", setup=failing))
    assert finished.outcome is Outcome.FAILURE
    assert finished.reason.startswith(
        "the setup exited with code 3; the agent did not start. Its last lines:\n````\n"
    ), finished.reason
    assert "gone-wrong" in finished.reason and finished.reason.endswith("\n````")
    assert "the-agent-started" not in recorder.text()
    assert "gone-wrong" in recorder.text()  # the tail is in the run's log too
    assert not recorder.of_type("started")
    assert entries(cache) == [] and leftovers(cache) == []
    # The same key again: set up again (nothing half-made was kept), and this time it works.
    fixed, again = run(cache, make_request(repo, SHOW, "p2", setup=SETUP))
    assert fixed.outcome is Outcome.SUCCESS, fixed.reason
    assert lines(again.text())[0] == "v1"


def test_a_setup_past_its_time_is_stopped_and_the_agent_never_starts(
    sample_repo: Path, cache: Path
) -> None:
    slow = SETUP.model_copy(update={"run": "mkdir deps; echo waiting; sleep 300", "timeout_s": 3})
    repo = with_lock(sample_repo, "v1")
    finished, recorder = run(cache, make_request(repo, AGENT, "p1", setup=slow))
    assert finished.outcome is Outcome.TIMED_OUT
    assert finished.reason.startswith("the setup ran longer than its 3-second limit; the agent")
    assert "waiting" in finished.reason
    assert "the-agent-started" not in recorder.text()
    assert entries(cache) == [] and leftovers(cache) == []


def test_past_the_cache_size_the_least_recently_used_entry_goes(
    sample_repo: Path, cache: Path
) -> None:
    repo = with_lock(sample_repo, "v1")
    one = SETUP.model_copy(update={"run": "mkdir deps; head -c 300000 /dev/urandom > deps/a"})
    two = one.model_copy(update={"run": one.run + " # two"})
    three = one.model_copy(update={"run": one.run + " # three"})
    first = run(cache, make_request(repo, "true", "p1", setup=one))[0]
    assert first.outcome is Outcome.SUCCESS, first.reason
    size = Store(cache / "setup", "any").size()
    budget = {"setup_cache_bytes": int(size * 2.5)}  # two entries like it fit, not three
    for spec, name in ((two, "p2"), (one, "p3")):  # `one` used after `two`
        assert run(cache, make_request(repo, "true", name, setup=spec), **budget)[0].outcome is (
            Outcome.SUCCESS
        )
    before = entries(cache)
    assert len(before) == 2
    run(cache, make_request(repo, "true", "p4", setup=three), **budget)
    after = entries(cache)
    assert len(after) == 2
    assert before[0] not in after  # `two`, the least recently used
    assert before[1] in after


def test_an_entry_in_use_is_never_evicted(tmp_path: Path) -> None:
    store = Store(tmp_path / "setup", "r1", max_bytes=100)
    made = []
    for key in ("k1", "k2"):
        staging = store.staging()
        (staging / "root").mkdir()
        (staging / "root" / "data").write_bytes(b"x" * 10_000)
        made.append(store.publish(staging, "https://example.com/a/b.git", key))
    assert all((entry / SIZE_NAME).is_file() and (entry / USE_LOCK).is_file() for entry in made)
    held, release = threading.Event(), threading.Event()

    def use() -> None:
        with store.held("https://example.com/a/b.git", "k1") as entry:
            assert entry == made[0]
            held.set()
            release.wait(30)

    user = threading.Thread(target=use)
    user.start()
    assert held.wait(30)
    try:
        evicted = store.evict(keep=made[1])
        assert evicted.entries == 0 and made[0].exists()
    finally:
        release.set()
        user.join(30)
    assert store.evict(keep=made[1]).entries == 1 and not made[0].exists()
    assert store.find("https://example.com/a/b.git", "k1") is None


def test_repositories_never_share_an_entry(tmp_path: Path) -> None:
    store = Store(tmp_path / "setup", "r1")
    assert store.entry("https://example.com/a/one.git", "k") != store.entry(
        "https://example.com/a/two.git", "k"
    )


def test_what_changes_the_key() -> None:
    from runner.setup.key import setup_key

    base = setup_key(SETUP, "sha256:img", ["blob1"])
    assert base == setup_key(SETUP, "sha256:img", ["blob1"])
    assert base != setup_key(SETUP, "sha256:other", ["blob1"])
    assert base != setup_key(SETUP, "sha256:img", ["blob2"])
    assert base != setup_key(SETUP.model_copy(update={"run": "x"}), "sha256:img", ["blob1"])
    assert base != setup_key(SETUP.model_copy(update={"paths": ["deps"]}), "sha256:img", ["blob1"])
    assert base != setup_key(SETUP, "sha256:img", ["blob1"], scope="owner.repo.7")
    assert isinstance(SETUP, SetupSpec)


def test_a_kept_path_the_repository_does_not_ignore_is_refused_before_setup_runs(
    sample_repo: Path, cache: Path
) -> None:
    spec = SETUP.model_copy(update={"paths": ["vendor"], "run": "echo setting-up"})
    finished, recorder = run(cache, make_request(sample_repo, AGENT, "p1", setup=spec))
    assert finished.outcome is Outcome.FAILURE
    assert finished.reason.startswith(NOT_IGNORED.format(path="vendor")), finished.reason
    assert "setting-up" not in recorder.text() and "the-agent-started" not in recorder.text()


def test_a_later_commit_that_stops_ignoring_a_kept_path_fails_saying_which(
    sample_repo: Path, cache: Path
) -> None:
    repo = with_lock(sample_repo, "v1")
    first, _ = run(cache, make_request(repo, AGENT, "p1", setup=SETUP))
    assert first.outcome is Outcome.SUCCESS, first.reason
    (repo / ".gitignore").write_text("node_modules/\n")  # the same lockfile: the same key
    git(repo, "commit", "-q", "-am", "stop ignoring deps")
    finished, recorder = run(cache, make_request(repo, AGENT, "p2", setup=SETUP))
    assert finished.outcome is Outcome.FAILURE
    assert finished.reason.startswith(NOT_IGNORED.format(path="deps")), finished.reason
    assert "the-agent-started" not in recorder.text()
    assert len(entries(cache)) == 1  # the entry stays for the commits that still ignore it


def test_a_run_stopped_while_its_setup_runs_is_cancelled_at_once(
    sample_repo: Path, cache: Path, docker_client: docker.DockerClient
) -> None:
    repo = with_lock(sample_repo, "v1")
    slow = SETUP.model_copy(update={"run": "mkdir deps; echo waiting; sleep 300"})
    stop = StopSignal()

    def stop_once_setup_runs() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = docker_client.containers.list(
                filters={"label": [LABEL_SETUP, f"{LABEL_RUNNER}={RUNNER_ID}"]}
            )
            if found:
                stop.stop("stopped by a test")
                return
            time.sleep(0.1)

    stopper = threading.Thread(target=stop_once_setup_runs)
    stopper.start()
    began = time.monotonic()
    finished, recorder = run(cache, make_request(repo, AGENT, "p1", setup=slow), stop)
    stopper.join(60)
    assert finished.outcome is Outcome.CANCELLED, finished.reason
    assert finished.reason.startswith("stopped while the setup ran; the agent did not start")
    assert time.monotonic() - began < 60  # not the setup's 15 minutes
    assert "the-agent-started" not in recorder.text()
    assert entries(cache) == [] and leftovers(cache) == []
