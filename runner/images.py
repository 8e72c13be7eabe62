"""Building the agent image from `sandbox/`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import docker
import docker.errors

from runner.container import SANDBOX_LABEL
from runner.errors import ImageMissing, TrimoError
from runner.network.proxyimage import LABEL_EGRESS, PROXY_IMAGE
from runner.registry import ImageInfo

SANDBOX_DIR = Path(__file__).resolve().parent.parent / "sandbox"
BASE_IMAGE = "debian:bookworm-slim"
HOST_EXTRA_CAS = Path("/usr/local/share/ca-certificates")


MAX_REPORTED = 10
"""The most agent images a runner reports in its heartbeat."""


def inventory(client: docker.DockerClient, agent_images: Iterable[str]) -> list[ImageInfo]:
    """What the engine has of `agent_images` (the first `MAX_REPORTED`) and of the egress
    proxy's image: each one's id and the Trimo version it was built for."""
    wanted = [(name, "agent", SANDBOX_LABEL) for name in list(agent_images)[:MAX_REPORTED]]
    found = []
    for name, role, label in [*wanted, (PROXY_IMAGE, "egress", LABEL_EGRESS)]:
        try:
            image = client.images.get(name)
        except docker.errors.ImageNotFound:
            found.append(ImageInfo(name=name, role=role))
            continue
        version = str((image.labels or {}).get(label, ""))
        found.append(ImageInfo(name=name, role=role, id=str(image.id), version=version))
    return found


def host_extra_cas() -> list[Path]:
    """CA certificates this host added to its own trust store (corporate proxies)."""
    return sorted(HOST_EXTRA_CAS.glob("**/*.crt")) if HOST_EXTRA_CAS.is_dir() else []


def registry_build_args(
    environ: Mapping[str, str] = os.environ,
    ask: Callable[[list[str]], str] = lambda argv: _ask(argv),
) -> dict[str, str]:
    """The package registries this host uses, as build arguments for the agent image: npm's
    (`TRIMO_NPM_REGISTRY`, else `npm config get registry`) and pip's index
    (`TRIMO_PIP_INDEX_URL`, else `PIP_INDEX_URL`, else `pip config get global.index-url`).
    A registry the host does not name is left out."""
    npm = environ.get("TRIMO_NPM_REGISTRY") or ask(["npm", "config", "get", "registry"])
    pip = (
        environ.get("TRIMO_PIP_INDEX_URL")
        or environ.get("PIP_INDEX_URL")
        or ask(["pip3", "config", "get", "global.index-url"])
    )
    args = {"NPM_REGISTRY": npm, "PIP_INDEX_URL": pip}
    return {name: value.strip() for name, value in args.items() if value.strip().startswith("http")}


def _ask(argv: list[str]) -> str:
    """One line of a host tool's configuration; empty when the tool is missing or says nothing."""
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def ensure_base_image(client: docker.DockerClient, image: str = BASE_IMAGE) -> None:
    """Make sure the base image exists: pull it, or build it locally with mmdebstrap."""
    try:
        client.images.get(image)
        return
    except docker.errors.ImageNotFound:
        pass
    script = SANDBOX_DIR / "build-base.sh"
    result = subprocess.run(["bash", str(script), image], capture_output=True, text=True)
    if result.returncode != 0:
        raise ImageMissing(
            f"The base image {image!r} could not be pulled or built: {result.stderr[-500:]}",
            "on Debian, install mmdebstrap and run as root; elsewhere `docker pull` it",
        )


def pinned_base(dockerfile: Path) -> str:
    """The `ARG BASE_IMAGE=` a Dockerfile builds FROM (scripts/pin-base-images pins it)."""
    found = re.findall(r"^ARG BASE_IMAGE=(\S+)$", dockerfile.read_text(), re.M)
    if len(found) != 1:
        raise TrimoError(f"{dockerfile} needs one ARG BASE_IMAGE= line", "restore it from git")
    return str(found[0])


def usable_base(client: docker.DockerClient, ref: str) -> str:
    """`ref` where the engine has it or can pull it; for a digest it cannot (a machine that
    reaches no registry, whose base is built by sandbox/build-base.sh), the tag alone."""
    if "@" not in ref:
        return ref
    try:
        client.images.get(ref)
        return ref
    except docker.errors.ImageNotFound:
        pass
    try:
        client.images.pull(ref)
        return ref
    except docker.errors.APIError:
        return ref.split("@", 1)[0]


def base_for(client: docker.DockerClient, dockerfile: Path) -> str:
    """The base to build `dockerfile` from (`usable_base`), there to build from."""
    base = usable_base(client, pinned_base(dockerfile))
    ensure_base_image(client, base)
    return base


def build_image(
    client: docker.DockerClient,
    tag: str,
    target: str = "agent",
    ca_certs: Iterable[Path] = (),
    build_args: dict[str, str] | None = None,
    on_line: Callable[[str], None] = lambda _line: None,
) -> str:
    """Build `sandbox/Dockerfile` at `target` as `tag`; returns the image id."""
    base = base_for(client, SANDBOX_DIR / "Dockerfile")
    with tempfile.TemporaryDirectory(prefix="trimo-build-") as tmp:
        context = Path(tmp) / "context"
        shutil.copytree(SANDBOX_DIR, context)
        for cert in ca_certs:
            if not cert.is_file():
                raise TrimoError(f"CA certificate not found: {cert}")
            shutil.copy(cert, context / "certs" / (cert.stem + ".crt"))
        image_id = ""
        try:
            for chunk in client.api.build(
                path=str(context),
                tag=tag,
                target=target,
                buildargs={"BASE_IMAGE": base}
                | (registry_build_args() if target == "agent" else {})
                | (build_args or {}),
                rm=True,
                decode=True,
            ):
                if "error" in chunk:
                    raise TrimoError(
                        f"Image build failed: {chunk['error'].strip()}",
                        "fix the error above; network access to Debian and npm is needed",
                    )
                if text := chunk.get("stream", "").rstrip():
                    on_line(text)
                if aux := chunk.get("aux"):
                    image_id = aux.get("ID", image_id)
        except docker.errors.APIError as exc:
            raise TrimoError(f"Image build failed: {exc.explanation or exc}") from exc
    return image_id
