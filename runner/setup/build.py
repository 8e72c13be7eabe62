"""Making a setup entry: `run` in a sandbox on a fresh checkout, then only `paths` kept.

The checkout comes from the trusted mirror, made by the host and checked out at the
commit inside the sandbox, as for previews. The sandbox is an agent container (the run's
image and limits, the agent's uid, read-only image, no capabilities) on a disk of its own
(`TRIMO_DISK`) with no secret in its environment, and setup's own network: its
`allowed_hosts` through the egress proxy, or none at all. When `run` succeeds within its
time, each of `paths` is moved (renamed, not copied) into the entry's `layers/`; the rest
of the checkout goes. Anything else (a failure, a timeout, a path left as a link) raises
`SetupFailed` with the sandbox's last lines, and nothing is kept.
"""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import docker
import requests

from runner import disk, gitops
from runner.container import (
    LABEL_RUN,
    LABEL_RUNNER,
    AgentContainer,
    ContainerSpec,
    ExitInfo,
    box_dirs,
    log_tail,
)
from runner.job import Resources
from runner.network.egress import NetworkAttachment, attach, direct
from runner.setup.layers import LAYERS, on_host
from runner.setup.spec import SetupSpec

LABEL_SETUP: Final = "dev.trimo.setup"
WAIT_SECONDS: Final = 2.0
"""How often a waiting setup looks whether its run was stopped."""
SCRIPT: Final = """\
set -e
git checkout -q --detach "$TRIMO_SETUP_SHA"
exec bash -c "$TRIMO_SETUP_RUN"
"""


class SetupFailed(Exception):
    """The setup did not make an entry: why (for people) and its last lines."""

    def __init__(
        self, reason: str, tail: str = "", timed_out: bool = False, cancelled: bool = False
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.tail = tail
        self.timed_out = timed_out
        self.cancelled = cancelled


@dataclass(frozen=True)
class Builder:
    """How this runner runs setups."""

    client: docker.DockerClient
    runner_id: str
    user: str
    owner: int | None
    disk_bytes: int
    upstream_proxy: str | None = None


@dataclass(frozen=True)
class Job:
    """One setup to make: `spec` at `sha`, whose checkout `checkout` makes."""

    spec: SetupSpec
    sha: str
    image: str
    image_id: str
    """The image's id (`runner.dockerclient.require_image`): part of the cache key."""
    resources: Resources
    checkout: Callable[[Path], None]
    """Makes a workspace at the given path from the trusted mirror, holding `sha`."""
    stopped: Callable[[], bool] = lambda: False
    """Whether the run (or preview) that waits for this setup was stopped."""
    scope: str = ""
    """Whose entry it makes: "" for the repository's, a pipeline's name for its own
    (`runner.setup.key.scope_of`)."""


def build(builder: Builder, job: Job, staging: Path) -> None:
    """Run `job` on a disk at `staging`; its root then holds only `layers/<n>`."""
    root = disk.mount(staging, builder.disk_bytes)
    try:
        workspace, home = root / "workspace", root / "home"
        job.checkout(workspace)
        for made in (home, root / "context" / "out", root / "out"):
            made.mkdir(mode=0o755, parents=True)
        if builder.owner is not None:
            os.chown(home, builder.owner, builder.owner)
        tail = _run(builder, job, root)
        _keep(root, job.spec.paths, builder.owner, tail)
        for name in ("workspace", "home", "context", "out"):
            gitops.remove_tree(root / name)
    finally:
        if os.path.ismount(root):
            subprocess.run(["fstrim", str(root)], capture_output=True)  # free the image's blocks
            disk.unmount(root)
            _wait_detached(staging / disk.IMAGE_NAME)


def _wait_detached(image: Path, seconds: float = 30) -> None:
    """Wait until no loop device holds `image` (one is let go a little after its unmount):
    a read-only mount of it could otherwise take over the writable device, and fail."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        held = subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True)
        if held.returncode != 0 or not held.stdout.strip():
            return
        time.sleep(0.05)


def _run(builder: Builder, job: Job, root: Path) -> str:
    """Run the setup to its end; its last lines. SetupFailed unless it succeeded in time."""
    spec = job.spec
    name = f"setup-{secrets.token_hex(6)}"
    network: NetworkAttachment = direct("none")
    if spec.allowed_hosts:
        network = attach(
            builder.client, "allowlist", name, spec.allowed_hosts, builder.runner_id,
            builder.upstream_proxy,
        )  # fmt: skip
    container: AgentContainer | None = None
    try:
        container = AgentContainer(
            builder.client,
            ContainerSpec(
                image=job.image,
                command=["bash", "-c", SCRIPT],
                **box_dirs(root),
                user=builder.user,
                network="allowlist" if spec.allowed_hosts else "none",
                network_name=network.network,
                dns=tuple(network.dns or ()),
                resources=job.resources,
                env={
                    "TRIMO_SETUP_SHA": job.sha,
                    "TRIMO_SETUP_RUN": spec.run,
                    **network.env,
                },
                labels={LABEL_RUNNER: builder.runner_id, LABEL_RUN: name, LABEL_SETUP: name},
                name=f"trimo-{name}",
            ),
        )
        network.ready()
        container.start()
        exit_info = _wait(container, job)
        if exit_info is None:
            container.stop(0)
        tail = _clean(log_tail(builder.client, container.id), network)
        if exit_info is None:
            if job.stopped():
                raise SetupFailed("stopped while the setup ran", tail, cancelled=True)
            limit = spec.timeout_s
            words = f"{limit // 60}-minute" if limit % 60 == 0 else f"{limit}-second"
            raise SetupFailed(f"the setup ran longer than its {words} limit", tail, timed_out=True)
        if exit_info.oom_killed:
            raise SetupFailed(
                f"the setup ran out of memory (the run's {job.resources.memory} limit)", tail
            )
        if exit_info.exit_code != 0:
            raise SetupFailed(f"the setup exited with code {exit_info.exit_code}", tail)
        return tail
    finally:
        if container is not None:
            container.remove()
        network.release()


def _wait(container: AgentContainer, job: Job) -> ExitInfo | None:
    """The setup's exit; None when it ran out of time or the run was stopped."""
    deadline = time.monotonic() + job.spec.timeout_s
    while (remaining := deadline - time.monotonic()) > 0 and not job.stopped():
        try:
            return container.wait(timeout=max(1, min(WAIT_SECONDS, remaining)))
        except requests.RequestException:
            continue
    return None


def _clean(tail: str, network: NetworkAttachment) -> str:
    return tail.replace(network.secret, "***") if network.secret else tail


def _keep(root: Path, paths: list[str], owner: int | None, tail: str) -> None:
    """Move each of `paths` into `root/layers/<n>`, never through a link; a path setup did
    not make is an empty layer."""
    layers = root / LAYERS
    layers.mkdir(mode=0o755)
    layers_fd = os.open(layers, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for index, path in enumerate(paths):
            base, below = on_host(path, root / "workspace", root / "home")
            *parents, name = below.split("/")
            parent = _open_below(base, parents, path, tail)
            if parent is None:
                _empty_layer(layers_fd, str(index), owner)
                continue
            try:
                try:
                    mode = os.lstat(name, dir_fd=parent).st_mode
                except FileNotFoundError:
                    _empty_layer(layers_fd, str(index), owner)
                    continue
                if not stat.S_ISDIR(mode):
                    raise SetupFailed(_not_a_directory(path), tail)
                os.rename(name, str(index), src_dir_fd=parent, dst_dir_fd=layers_fd)
            finally:
                os.close(parent)
    finally:
        os.close(layers_fd)


def _open_below(base: Path, parts: list[str], path: str, tail: str) -> int | None:
    """A descriptor of `base/parts...` (None when missing); SetupFailed on a link or file."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    for part in parts:
        try:
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        except FileNotFoundError:
            os.close(fd)
            return None
        except OSError:
            os.close(fd)
            raise SetupFailed(_not_a_directory(path), tail) from None
        os.close(fd)
        fd = inner
    return fd


def _empty_layer(layers_fd: int, name: str, owner: int | None) -> None:
    os.mkdir(name, 0o755, dir_fd=layers_fd)
    if owner is not None:
        os.chown(name, owner, owner, dir_fd=layers_fd)


def _not_a_directory(path: str) -> str:
    return f"the setup left `{path}` as a file or a link, where a directory is kept"
