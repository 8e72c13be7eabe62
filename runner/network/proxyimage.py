"""The egress proxy's image (sandbox/proxy): tinyproxy for the runs, nftables for the host rules."""

from __future__ import annotations

from pathlib import Path

import docker
import docker.errors

from runner.errors import TrimoError

PROXY_CONTEXT = Path(__file__).resolve().parent.parent.parent / "sandbox" / "proxy"
LABEL_EGRESS = "dev.trimo.egress"
PROXY_VERSION = "10"
"""The `dev.trimo.egress` label of sandbox/proxy/Dockerfile: bumped when the image changes."""
PROXY_IMAGE = f"trimo-egress:{PROXY_VERSION}"
"""Tagged by version, so runners of two Trimo versions on one engine never rebuild it in turn."""


def ensure_image(client: docker.DockerClient, tag: str = PROXY_IMAGE) -> None:
    """Build the proxy image from sandbox/proxy when it is missing or older than this Trimo
    (seconds, once)."""
    try:
        if client.images.get(tag).labels.get(LABEL_EGRESS) == PROXY_VERSION:
            return
    except docker.errors.ImageNotFound:
        pass
    from runner.images import base_for

    base = base_for(client, PROXY_CONTEXT / "Dockerfile")
    try:
        client.images.build(
            path=str(PROXY_CONTEXT), tag=tag, rm=True, buildargs={"BASE_IMAGE": base}
        )
    except (docker.errors.BuildError, docker.errors.APIError) as exc:
        raise TrimoError(
            f"The egress proxy image could not be built: {exc}",
            "network access to Debian's packages is needed once",
        ) from exc
