"""A preview's container: a fresh checkout from the trusted mirror, `setup`, then `command`.

The checkout is made by the host from the mirror (never the agent's workspace) and checked
out at the branch head inside the sandbox, as for runs. The container is an agent
container (read-only image, limits, the agent's uid, no capabilities) with no secret in
its environment: `PORT`, the two scripts and, for `allowlist`, its egress proxy. Its
workspace and home are on a disk of its own, `TRIMO_DISK` in size like a pipeline's.

Every preview has a network of its own that the runner's preview proxy reaches (from the
host) and no other tenant does: `none` has no way out (`--internal`), `bridge` a way to
public addresses, `allowlist` only its own egress proxy, with the repository's allowed
hosts. The runner's host rules (runner.network.firewall) keep each from the host and
from every private address, so a preview's only way in is the preview proxy.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from runner import disk, dockerclient, gitops
from runner.container import (
    LABEL_PIPELINE,
    LABEL_RUN,
    LABEL_RUNNER,
    AgentContainer,
    ContainerSpec,
    box_dirs,
)
from runner.errors import TrimoError
from runner.network import egress, tenant
from runner.previews.job import PreviewRequest
from runner.setup.build import Job
from runner.setup.cache import SetupCache
from runner.setup.key import scope_of

LABEL_PREVIEW = "dev.trimo.preview"
SCRIPT = """\
set -e
git checkout -q --detach "$TRIMO_PREVIEW_SHA"
if [ -n "$TRIMO_PREVIEW_SETUP" ]; then bash -c "$TRIMO_PREVIEW_SETUP"; fi
exec bash -c "$TRIMO_PREVIEW_COMMAND"
"""


@dataclass(frozen=True)
class Host:
    """How this runner starts previews."""

    client: docker.DockerClient
    runner_id: str
    cache_dir: Path
    user: str
    owner: int | None
    upstream_proxy: str | None = None
    disk_bytes: int = 0
    """Each preview's disk (TRIMO_DISK, as for a pipeline's): 0 for none."""
    setup: SetupCache | None = None
    """The runner's setup cache, shared with its runs (None: `cached_setup` is refused)."""

    @classmethod
    def of_this_process(
        cls,
        client: docker.DockerClient,
        runner_id: str,
        cache_dir: Path,
        agent_uid: int,
        upstream_proxy: str | None = None,
        disk_bytes: int = 0,
        setup: SetupCache | None = None,
    ) -> Host:
        """As for runs: the agent's uid when the runner is root, else the runner's own."""
        root = os.geteuid() == 0
        return cls(
            client=client,
            runner_id=runner_id,
            cache_dir=cache_dir,
            user=f"{agent_uid}:{agent_uid}" if root else f"{os.getuid()}:{os.getgid()}",
            owner=agent_uid if root else None,
            upstream_proxy=upstream_proxy,
            disk_bytes=disk_bytes,
            setup=setup,
        )


@dataclass
class Launched:
    """A started preview container, where it listens, and how to take it all down."""

    container_id: str
    address: str
    """Given to it before it starts (runner.previews.sandbox._free_address), so known even
    when its setup fails at once."""
    sha: str
    directory: Path
    """Its disk's root: workspace/, home/, context/, out/."""
    teardown: Callable[[], None]


def launch(host: Host, request: PreviewRequest) -> Launched:
    """Check out the branch head, start the container; raises `TrimoError` with the reason.
    The preview's network is made while git works."""
    client = host.client
    image_id = dockerclient.require_image(client, request.image)
    place = checkouts(host.cache_dir, host.runner_id) / request.preview_id
    cleanups: list[Callable[[], object]] = []

    def teardown() -> None:
        for cleanup in reversed(cleanups):
            with contextlib.suppress(Exception):
                cleanup()

    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            network_ready = pool.submit(_network, host, request, cleanups)
            directory, sha = _checkout(host, request, place, cleanups)
            network, env, dns = network_ready.result()
        mounts = _environment(host, request, image_id, directory, sha, cleanups)
        spec = ContainerSpec(
            image=request.image,
            command=["bash", "-c", SCRIPT],
            **box_dirs(directory),
            user=host.user,
            network=request.network,
            network_name=network,
            address=_free_address(client, network),
            dns=dns,
            resources=request.resources,
            env={
                **env,
                "PORT": str(request.port),
                "TRIMO_PREVIEW_SHA": sha,
                "TRIMO_PREVIEW_SETUP": request.setup,
                "TRIMO_PREVIEW_COMMAND": request.command,
            },
            labels={
                LABEL_RUNNER: host.runner_id,
                LABEL_RUN: request.preview_id,
                LABEL_PIPELINE: request.pipeline,
                LABEL_PREVIEW: request.preview_id,
            },
            name=f"trimo-preview-{request.preview_id}",
            writable=mounts,
        )
        _remove_named(client, spec.name or "")
        container = AgentContainer(client, spec)
        cleanups.append(container.remove)
        container.start()
        return Launched(container.id, spec.address or "", sha, directory, teardown)
    except BaseException:
        teardown()
        raise


def _checkout(
    host: Host, request: PreviewRequest, place: Path, cleanups: list[Callable[[], object]]
) -> tuple[Path, str]:
    """The preview's disk at `place` (its own filesystem of `host.disk_bytes`), with a fresh
    workspace holding the branch from the trusted mirror; its removal added to `cleanups`.
    (The disk's root, the branch head's sha.)"""
    token = request.token.get_secret_value() if request.token else None
    mirror = gitops.ensure_mirror(host.cache_dir / "mirrors", request.repo.clone_url, token)
    sha = gitops.branch_sha(mirror, request.branch)
    if sha is None:
        raise TrimoError(
            f"The branch {request.branch} does not exist yet.",
            "a preview shows a pipeline's branch once a run has pushed to it",
        )
    cleanups.append(lambda: gitops.remove_tree(place))
    _remove(place)
    place.mkdir(parents=True, mode=0o700)
    directory = disk.mount(place, host.disk_bytes)
    cleanups.append(lambda: disk.unmount(directory))
    for name in ("context/out", "out", "home"):
        (directory / name).mkdir(parents=True)
    if host.owner is not None:
        os.chown(directory / "home", host.owner, host.owner)
    gitops.create_workspace(directory / "workspace", mirror, [request.branch], host.owner)
    return directory, sha


def _environment(
    host: Host,
    request: PreviewRequest,
    image_id: str,
    directory: Path,
    sha: str,
    cleanups: list[Callable[[], object]],
) -> dict[Path, str]:
    """The repository's `setup:` from the runner's cache (the runs' entries, made on a miss),
    restored in the preview's workspace and home; its teardown added to `cleanups`."""
    setup = request.cached_setup
    if setup is None:
        return {}
    if host.setup is None:
        raise TrimoError("This runner has no setup cache for previews.")
    token = request.token.get_secret_value() if request.token else None
    mirror = gitops.ensure_mirror(host.cache_dir / "mirrors", request.repo.clone_url, token)

    def checkout(path: Path) -> None:
        gitops.create_workspace(path, mirror, [request.branch], host.owner)

    # A preview knows no base branch: a setup it makes is its pipeline's own.
    scope = scope_of(mirror, sha, None, request.pipeline)
    job = Job(setup, sha, request.image, image_id, request.resources, checkout, scope=scope)
    stack = ExitStack()
    cleanups.append(stack.close)
    environment = stack.enter_context(
        host.setup.ready(job, request.repo.clone_url, mirror, directory / "setup-layers")
    )
    environment.place(directory / "workspace", directory / "home")
    return environment.mounts


def _remove(place: Path) -> None:
    """Remove a preview's directory, its disk unmounted first."""
    if os.path.ismount(place / disk.ROOT_NAME):
        disk.unmount(place / disk.ROOT_NAME)
    gitops.remove_tree(place)


def _network(
    host: Host, request: PreviewRequest, cleanups: list[Callable[[], object]]
) -> tuple[str, dict[str, str], tuple[str, ...]]:
    """(network name, environment, DNS) of the preview, its release added to `cleanups`."""
    if request.network == "allowlist":
        attachment = egress.attach(
            host.client,
            "allowlist",
            f"preview-{request.preview_id}",
            request.allowed_hosts,
            host.runner_id,
            host.upstream_proxy,
        )
        cleanups.append(attachment.release)
        return attachment.network, attachment.env, tuple(attachment.dns or ())
    try:
        network = tenant.create(
            host.client,
            host.runner_id,
            internal=request.network == "none",
            labels={LABEL_PREVIEW: request.preview_id},
        )
    except TrimoError as exc:
        raise TrimoError(f"The preview's network could not be made: {exc}") from exc
    cleanups.append(lambda: tenant.remove(network))
    return str(network.name), {}, ()


def checkouts(cache_dir: Path, runner_id: str) -> Path:
    """Where this runner's previews are checked out: a directory of its own, since runners
    may share a cache directory (`runner.leftovers` removes it at start)."""
    return cache_dir / "previews" / gitops.repo_key(runner_id)


def _remove_named(client: docker.DockerClient, name: str) -> None:
    with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
        client.containers.get(name).remove(force=True)


def _free_address(client: docker.DockerClient, network: str) -> str:
    """An address of `network` nothing else has (its gateway, the egress proxy): the
    preview's, known before it starts, however soon it ends."""
    attrs = client.networks.get(network).attrs
    config = (attrs.get("IPAM", {}).get("Config") or [{}])[0]
    taken = {config.get("Gateway", "")} | {
        str(endpoint.get("IPv4Address", "")).split("/")[0]
        for endpoint in (attrs.get("Containers") or {}).values()
    }
    for address in ipaddress.ip_network(config.get("Subnet", "0.0.0.0/32")).hosts():
        if str(address) not in taken:
            return str(address)
    raise TrimoError("The preview's network has no free address.")


def is_running(client: docker.DockerClient, container_id: str) -> bool:
    try:
        container = client.containers.get(container_id)
    except docker.errors.NotFound:
        return False
    return bool(container.status == "running")
