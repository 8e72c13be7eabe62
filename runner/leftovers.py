"""What a killed runner left on this host, removed when a runner with its id starts again.

A runner killed mid-work (kill -9, a power cut) leaves its containers behind (agents, their
helpers, previews, sandboxes started ahead, and its egress proxy with a tinyproxy for every
run that was going), the networks they used, pipeline disks still mounted (and the tmpfs
its sandboxes started ahead share their directories on), and its previews' checkouts. At start,
once no live process answers to its id (`registry.live_namesake`), a runner removes every
container and network that names it in an owner label (its tenants' networks among them),
unmounts the pipeline disks that no run holds, and deletes its preview checkouts; its host
rules (runner.network.firewall) are then put in place afresh, before its first network.
When it stops, `close` removes its egress proxy, its networks and, once none is left, the
host rules it put in place.

Several runners may share a Docker engine and a cache directory. Their containers and
networks name another runner; their pipeline disks are held by their runs' locks; their
preview checkouts are under their own key. None of it is touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import docker
import docker.errors

from runner import disk, gitops, warm
from runner.container import LABEL_PIPELINE, LABEL_RUNNER
from runner.errors import TrimoError
from runner.network import firewall
from runner.network.proxyimage import LABEL_EGRESS
from runner.pipelinedir import PipelineDir
from runner.previews.sandbox import LABEL_PREVIEW, checkouts

log = logging.getLogger(__name__)

OWNER_LABELS: Final = (LABEL_RUNNER, LABEL_EGRESS)
"""Labels whose value is the id of the runner a container or network belongs to. Whatever a
runner makes on Docker carries one of them."""


@dataclass
class Cleared:
    """What `clear` removed."""

    containers: int = 0
    networks: int = 0
    unmounted: int = 0
    checkouts: int = 0
    previews: list[tuple[str, str]] = field(default_factory=list)
    """(preview id, pipeline) of each preview container removed: the App is told they
    stopped."""

    def __bool__(self) -> bool:
        return bool(self.containers or self.networks or self.unmounted or self.checkouts)


def clear(client: docker.DockerClient, runner_id: str, cache_dir: Path) -> Cleared:
    """Remove what an earlier process of `runner_id` left. Call it before this process
    starts anything, and only when no other process runs as `runner_id`."""
    cleared = Cleared()
    for container in _owned(client.containers.list, runner_id, all=True):
        labels = container.labels or {}
        if LABEL_PREVIEW in labels:
            cleared.previews.append((labels[LABEL_PREVIEW], labels.get(LABEL_PIPELINE, "")))
        try:
            container.remove(force=True)
            cleared.containers += 1
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            log.warning("could not remove container %s: %s", container.name, exc)
    for network in _owned(client.networks.list, runner_id):
        try:
            network.remove()
            cleared.networks += 1
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:  # another runner's container is still on it
            log.warning("could not remove network %s: %s", network.name, exc)
    cleared.unmounted = int(warm.clear(cache_dir, runner_id)) + unmount_idle(cache_dir)
    mine = checkouts(cache_dir, runner_id)
    if mine.exists():
        cleared.checkouts = sum(1 for _ in mine.iterdir())
        for root in mine.glob(f"*/{disk.ROOT_NAME}"):  # each preview's own disk
            if os.path.ismount(root):
                disk.unmount(root)
        with contextlib.suppress(TrimoError):
            gitops.remove_tree(mine)
    cleared.previews = [(p, q) for p, q in cleared.previews if p and q]
    return cleared


def close(client: docker.DockerClient, runner_id: str) -> None:
    """At a runner's end (its runs and previews over): remove its egress proxy and its
    networks, then its host rules, unless a network of its own is still in use."""
    for container in client.containers.list(
        all=True, filters={"label": f"{LABEL_EGRESS}={runner_id}"}
    ):
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True)
    kept = 0
    for network in _owned(client.networks.list, runner_id):
        try:
            network.remove()
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError:
            kept += 1
    if kept:
        log.warning(
            "%d network(s) of runner %s are still in use: its host rules stay", kept, runner_id
        )
        return
    firewall.remove(client, runner_id)


def _owned(list_: Callable[..., list[Any]], runner_id: str, **kwargs: bool) -> list[Any]:
    """The containers or networks an owner label gives to `runner_id`, each once."""
    found: dict[str, Any] = {}
    for label in OWNER_LABELS:
        for item in list_(filters={"label": f"{label}={runner_id}"}, **kwargs):
            found.setdefault(str(item.id), item)
    return list(found.values())


def unmount_idle(cache_dir: Path) -> int:
    """Unmount the pipeline disks no run holds (a run holds its pipeline's lock while its
    disk is mounted); how many."""
    count = 0
    for root in sorted((cache_dir / "pipelines").glob(f"*/*/{disk.ROOT_NAME}")):
        if not os.path.ismount(root):
            continue
        pipeline = PipelineDir(root.parent)
        with pipeline.lock.open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a run of this or another runner is using it
            disk.unmount(root)
            count += not os.path.ismount(root)
    return count
