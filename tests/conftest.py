"""Shared fixtures. Docker, Redis and git are real; scripts/test starts them.

A test that needs Docker or Redis fails (never skips) when they are missing.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import docker
import pytest
import redis

from runner import leftovers
from runner.errors import TrimoError
from runner.network import firewall

CORPORA = Path(__file__).resolve().parent.parent.parent / "shared" / "corpora"
if not CORPORA.is_dir():
    CORPORA = Path(os.environ.get("TRIMO_CORPORA", "/work/shared/corpora"))

TEST_IMAGE = os.environ.get("TRIMO_TEST_IMAGE", "trimo-agent:base")
REDIS_URL_OVERRIDE = os.environ.get("TRIMO_TEST_REDIS_URL", "")


SPREAD: Final = frozenset({"tests/test_hostile_limits.py"})
"""Files of long tests independent of each other (no module fixture, no shared name): under
`--dist loadfile` (scripts/test) they go to any worker one by one."""


FIRST: Final = ("tests/test_scale_out.py",)
"""Files of one long test (minutes on a busy machine): started first, so that they run
beside the rest of the suite rather than alone at its end."""


CONTAINERS: Final = frozenset({"test_image", "docker_client"})
"""Fixtures of the tests that start containers: seconds each, where most tests take
milliseconds."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Long work first, so that no long test starts near the end: the files in FIRST, then
    the tests of SPREAD, then the other files, those of more tests with containers first,
    then of more tests. A file's tests keep their order. xdist hands out files in this
    order (Scheduling)."""
    files = Counter(_file(item.nodeid) for item in items)
    heavy = Counter(
        _file(item.nodeid) for item in items if CONTAINERS & set(getattr(item, "fixturenames", ()))
    )

    def rank(item: pytest.Item) -> tuple[int, int, int]:
        path = _file(item.nodeid)
        if path in FIRST:
            return 0, FIRST.index(path), 0
        return (1, 0, 0) if path in SPREAD else (2, -heavy[path], -files[path])

    items.sort(key=rank)


def _file(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist's `loadfile`, a file's tests on one worker in order (its module fixtures start
    once, its tests may share names), except for the files in SPREAD; files are handed out
    in the order of the collection. xdist's own order (by number of tests) would put the
    one-test scopes, FIRST's and SPREAD's, at the end: the longest tests ran last."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    config.option.loadscopereorder = False

    class Scheduling(LoadFileScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return nodeid if _file(nodeid) in SPREAD else _file(nodeid)

    return Scheduling(config, log)


@pytest.fixture(scope="session")
def corpora() -> Path:
    assert CORPORA.is_dir(), f"corpora not found at {CORPORA}; set TRIMO_CORPORA"
    return CORPORA


@pytest.fixture(scope="session", autouse=True)
def unmount_leftover_disks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Runners killed on purpose (kill -9 tests) leave their pipelines' disks mounted, as a
    real one would until its restart; unmount them so the test tree can be deleted."""
    base = str(tmp_path_factory.getbasetemp())
    yield
    with open("/proc/mounts") as mounts:
        leftover = [line.split()[1] for line in mounts if line.split()[1].startswith(base)]
    for mount in sorted(leftover, reverse=True):
        subprocess.run(["umount", "--lazy", mount], capture_output=True)


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"Docker engine is required (run scripts/test to start it): {exc}")
    return client


@pytest.fixture(scope="session")
def test_image(docker_client: docker.DockerClient) -> str:
    try:
        docker_client.images.get(TEST_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(
            f"image {TEST_IMAGE} missing: run `trimo image build --target base --tag {TEST_IMAGE}`"
        )
    return TEST_IMAGE


@pytest.fixture
def cache(tmp_path: Path, test_image: str) -> Path:
    """A runner's cache directory for engine tests (the test image must be built)."""
    return tmp_path / "cache"


@pytest.fixture
def deep_cache(cache: Path) -> Iterator[Path]:
    """`cache` for a test that leaves a tree deeper than Python's recursion limit in it,
    deleted with coreutils' rm afterwards: pytest deletes old temporary directories with
    shutil.rmtree, which recurses (Python 3.11), fails on such a tree, and so fails every
    later test session on the machine."""
    yield cache
    subprocess.run(["rm", "-rf", "--one-file-system", "--", str(cache)], check=False)


HOST_SECRET = "host-only-secret-4f1e9b"


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A directory of host files a hostile agent would like to read or change."""
    path = tmp_path / "host"
    path.mkdir()
    (path / "profile").write_text(f"export SECRET={HOST_SECRET}\n")
    (path / "config").write_text(f"[core]\n\tsecret = {HOST_SECRET}\n")
    return path


PROCESS_TAG = f"p{os.getpid()}x{secrets.token_hex(2)}"
_TAGGED = re.compile(r"-p(\d+)x[0-9a-f]{4}$")


def unique(name: str) -> str:
    """`name` made this test process's own. Runner ids, and the Docker objects and keys named
    after them, must not meet those of a parallel xdist worker or of another test session on
    the same engine: a runner starting clears what carries its id."""
    return f"{name}-{PROCESS_TAG}"


def _ours_or_orphaned(owner: str) -> bool:
    """Whether a runner id made by `unique` is this process's, or that of a process gone."""
    found = _TAGGED.search(owner)
    if found is None:
        return False
    if owner.endswith(PROCESS_TAG):
        return True
    try:
        os.kill(int(found.group(1)), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@pytest.fixture(scope="session", autouse=True)
def remove_runner_leftovers() -> Iterator[None]:
    """A runner keeps its egress proxy (a container and two networks) for its next runs, and
    a killed one leaves its containers. The runners of a test process are its own (`unique`):
    remove what they left when the process ends, and what killed test processes left before.
    Docker has room for about thirty networks."""
    _remove_owned(_ours_or_orphaned)
    yield
    _remove_owned(lambda owner: owner.endswith(PROCESS_TAG))


def _remove_owned(wanted: Callable[[str], bool]) -> None:
    owners: set[str] = set()
    try:
        client = docker.from_env()
        for label in leftovers.OWNER_LABELS:
            for container in client.containers.list(all=True, filters={"label": label}):
                if wanted((container.labels or {}).get(label, "")):
                    with contextlib.suppress(docker.errors.APIError):
                        container.remove(force=True)
            for network in client.networks.list(filters={"label": label}):
                if wanted(owner := (network.attrs.get("Labels") or {}).get(label, "")):
                    owners.add(owner)
                    with contextlib.suppress(docker.errors.APIError):
                        network.remove()
        for owner in owners:  # and their host rules
            with contextlib.suppress(TrimoError):
                firewall.remove(client, owner)
    except docker.errors.DockerException:
        pass  # the tests that need Docker say so


@contextmanager
def build_lock(tag: str) -> Iterator[None]:
    """Held while building image `tag`: of parallel workers and sessions, one builds it and the
    others wait, then find it built (or cached)."""
    key = hashlib.sha256(tag.encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"trimo-test-build-{key}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server of this test session's own, so parallel sessions never collide."""
    if REDIS_URL_OVERRIDE:
        yield REDIS_URL_OVERRIDE
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is required: run scripts/test (it installs and starts it)")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 30  # slow on a busy machine
    while True:
        try:
            client.ping()
            break
        except redis.exceptions.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
    yield url
    client.close()
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    client = redis.Redis.from_url(redis_server)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"Redis is required (run scripts/test to start it): {exc}")
    client.flushdb()
    yield redis_server
    client.flushdb()
    client.close()


def side_by_side(*commands: str) -> str:
    """A shell line running `commands` at once: probes that each wait out a timeout take
    the longest one's time, not their sum. Each command should print one line with one echo
    (short lines are written whole, so they never mix; they come in any order)."""
    return " ".join(f"{{ {command}; }} &" for command in commands) + " wait"


def git(cwd: Path, *args: str) -> str:
    """Run git in `cwd` and return its stdout (tests only)."""
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def sample_repo(tmp_path: Path) -> Path:
    """A small git repository with two commits on `main`."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "dev@example.com")
    git(repo, "config", "user.name", "Dev")
    (repo / "README.md").write_text("# sample\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    (repo / "src.txt").write_text("one\ntwo\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "second")
    return repo
