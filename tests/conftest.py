"""Shared fixtures. Docker, Redis and git are real; scripts/test starts them.

A test that needs Docker or Redis fails (never skips) when they are missing.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import redis

CORPORA = Path(__file__).resolve().parent.parent.parent / "shared" / "corpora"
if not CORPORA.is_dir():
    CORPORA = Path(os.environ.get("TRIMO_CORPORA", "/work/shared/corpora"))

TEST_IMAGE = os.environ.get("TRIMO_TEST_IMAGE", "trimo-agent:base")
REDIS_URL = os.environ.get("TRIMO_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="session")
def corpora() -> Path:
    assert CORPORA.is_dir(), f"corpora not found at {CORPORA}; set TRIMO_CORPORA"
    return CORPORA


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
def redis_url() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"Redis is required (run scripts/test to start it): {exc}")
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()


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
