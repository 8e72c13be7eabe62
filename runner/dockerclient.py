"""Connecting to the Docker engine, with a clear error when it is not there."""

from __future__ import annotations

import docker
import docker.errors

from runner.container import SANDBOX_LABEL, SANDBOX_VERSION
from runner.errors import DockerUnavailable, ImageMissing


def connect(timeout: int = 60) -> docker.DockerClient:
    """A client for the local engine; `DockerUnavailable` says how to start it."""
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except docker.errors.DockerException as exc:
        raise DockerUnavailable(
            f"Docker is not reachable: {exc}",
            "start the Docker engine (`sudo dockerd &`, or `scripts/services.sh` on Debian), "
            "or set DOCKER_HOST",
        ) from exc
    return client


def require_image(client: docker.DockerClient, image: str) -> str:
    """The image's id; fails early, and helpfully, when the agent image is not built."""
    try:
        found = client.images.get(image)
    except docker.errors.ImageNotFound as exc:
        raise ImageMissing(
            f"The image {image!r} is not on this machine.",
            "build it with `trimo image build` (or pass --image NAME)",
        ) from exc
    if (found.labels or {}).get(SANDBOX_LABEL) != SANDBOX_VERSION:
        raise ImageMissing(
            f"The image {image!r} was not built for this version of Trimo.",
            "rebuild it with `trimo image build` (it carries the sandbox's hand-over steps)",
        )
    return str(found.id)
