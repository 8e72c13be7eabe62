"""A sandbox started before its run, waiting for the run's directories and command.

Starting a container is the longest step before an agent runs, and Docker does it for one
container at a time: eight at once took 3.5 times as long as one alone. A warm box is
started while the runner is quiet, exactly as a run's container would be (the same image,
user, limits, read-only root, dropped capabilities, its own network) but with empty
directories where the run's workspace, /trimo and home go, and a waiter as its process.
When a run takes it, the host mounts the run's directories on those (runner.warm.mounts),
then writes the run's environment and command to a pipe only the waiter reads; the waiter
becomes the image's entrypoint with them, as the container's first process would have.
From then on it is the run's container: its output, exit, limits and removal are the same.

A box serves one run only and is removed with it: no tenant meets what another left.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import select
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container

from runner.container import (
    CONTEXT_MOUNT,
    HOME_MOUNT,
    LABEL_RUNNER,
    OUT_MOUNT,
    READY_LINE,
    WORKSPACE_MOUNT,
    AgentContainer,
    ContainerSpec,
    create_kwargs,
)
from runner.contract import NetworkMode
from runner.errors import TrimoError
from runner.job import Resources
from runner.network import egress
from runner.network.egress import EgressProxy, Joined
from runner.warm import mounts

LABEL_WARM = "dev.trimo.warm"
BOX_FILE = "warm-box"
GO_MOUNT = "/trimo-go"
HOLD_SECONDS = 30.0
"""How long a box just started may take to wait on its pipe."""
WAITER_FAILED = 87
WAITER = f"""exec 3<{GO_MOUNT} || exit {WAITER_FAILED}
mapfile -d '' -u 3 _trimo_go
exec 3<&-
[[ ${{_trimo_go[0]:-}} =~ ^[0-9]+$ ]] || exit {WAITER_FAILED}
_trimo_env=("${{_trimo_go[@]:1:_trimo_go[0]}}")
_trimo_command=("${{_trimo_go[@]:_trimo_go[0]+1}}")
for _trimo_each in "${{_trimo_env[@]}}"; do export "$_trimo_each" || exit {WAITER_FAILED}; done
cd {WORKSPACE_MOUNT} || exit {WAITER_FAILED}
exec "${{_trimo_command[@]}}"
"""
"""The box's process until its run begins: it blocks on the pipe, then exports the run's
variables and becomes the run's command (no `eval`: values are never read as code). The
command is set aside before any variable is exported, and the run's names cannot be its
own (`_trimo_…`), so no variable of the run's changes what it becomes."""
SERVED: frozenset[NetworkMode] = frozenset({"none", "allowlist"})
PER_RUN = frozenset({"command", "name", "labels", "environment", "volumes", "entrypoint"})
"""What a run sets in its box when it takes it; every other setting must be the box's."""
RUN_MOUNTS = {
    WORKSPACE_MOUNT: "rw",
    CONTEXT_MOUNT: "ro",
    OUT_MOUNT: "rw",
    HOME_MOUNT: "rw",
}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
READ_ONLY = frozenset({"BASHOPTS", "BASH_VERSINFO", "EUID", "PPID", "SHELLOPTS", "UID"})
"""Names bash will not export: the waiter would fail on them."""
OWN_PREFIX = "_trimo_"
"""The waiter's own names, which no run's variable may have."""
WRITE_SECONDS = 10.0
"""How long the waiter may take to read its run."""


@dataclass(frozen=True)
class BoxKey:
    """What a box is made for: runs that ask for the same get the same container."""

    image: str
    image_id: str
    """The image's id when the run asked for it: boxes are made from the id, not the tag."""
    user: str
    resources: Resources
    network: NetworkMode
    runner_id: str
    upstream_proxy: str | None = None


def go_message(env: Mapping[str, str], command: Sequence[str]) -> bytes | None:
    """What the waiter reads: the number of variables, each NAME=value, then the command,
    each ended by a NUL; None when it cannot be said so (a NUL in a value, a name a shell
    cannot export)."""
    items = [f"{name}={value}" for name, value in env.items()]
    if any(
        not _NAME.match(name) or name in READ_ONLY or name.startswith(OWN_PREFIX) for name in env
    ):
        return None
    if any("\0" in s for s in [*items, *command]):
        return None
    return b"".join(f"{part}\0".encode() for part in [str(len(items)), *items, *command])


def misfits(box: Mapping[str, Any], run: Mapping[str, Any], spec: ContainerSpec) -> list[str]:
    """The settings of a run's container (`run`, from `create_kwargs(spec)`, its image by id)
    that the box, made with `box`, does not have; empty when the run can take it."""
    found = [
        name
        for name in sorted(box.keys() | run.keys())
        if name not in PER_RUN and box.get(name) != run.get(name)
    ]
    volumes = {v["bind"]: v["mode"] for v in run.get("volumes", {}).values()}
    if volumes != RUN_MOUNTS or spec.home is None or spec.out_dir != spec.context_dir / "out":
        found.append("volumes")
    if go_message(run.get("environment", {}), spec.command) is None:
        found.append("environment")
    return found


@dataclass
class Slot:
    """The host's side of a box: the directories it shares, its pipe, and a private stage."""

    path: Path
    stage: Path

    @property
    def go(self) -> Path:
        return self.path / "go"

    def make(self) -> None:
        """Its directories and pipe, with their modes whatever the umask (the runner's unit
        sets 0077: a pipe only root may read would leave every waiter out)."""
        for name in ("workspace", "context", "home"):
            (self.path / name).mkdir(parents=True)
            (self.path / name).chmod(0o755)
        self.path.chmod(0o755)
        os.mkfifo(self.go)
        self.go.chmod(0o644)
        self.stage.mkdir(mode=0o700)

    def volumes(self) -> dict[str, dict[str, str]]:
        return {
            str(self.path / "workspace"): {"bind": WORKSPACE_MOUNT, "mode": "rw,rslave"},
            str(self.path / "context"): {"bind": CONTEXT_MOUNT, "mode": "ro,rslave"},
            str(self.path / "home"): {"bind": HOME_MOUNT, "mode": "rw,rslave"},
            str(self.go): {"bind": GO_MOUNT, "mode": "ro"},
        }

    def fill(self, spec: ContainerSpec) -> None:
        """Mount the run's directories where the box expects them."""
        assert spec.home is not None
        mounts.place(spec.workspace, self.path / "workspace", self.stage, read_only=False)
        mounts.place(spec.context_dir, self.path / "context", self.stage, read_only=True)
        mounts.place(spec.out_dir, self.path / "context" / "out", self.stage, read_only=False)
        mounts.place(spec.home, self.path / "home", self.stage, read_only=False)

    def empty(self) -> None:
        """Unmount the run's directories and remove the slot. Never a recursive delete: a
        mount that stayed would take the run's workspace with it."""
        for name in ("context/out", "context", "workspace", "home"):
            mounts.detach(self.path / name)
        mounts.detach(self.stage)
        with contextlib.suppress(FileNotFoundError):
            self.go.unlink()
        for directory in (self.path / "workspace", self.path / "context", self.path / "home"):
            with contextlib.suppress(FileNotFoundError):
                directory.rmdir()
        for directory in (self.path, self.stage):
            with contextlib.suppress(FileNotFoundError):
                directory.rmdir()


def template(key: BoxKey, slot: Slot, name: str, network_name: str | None) -> ContainerSpec:
    """The spec a box is made with: a run's, but for its directories, command and labels."""
    return ContainerSpec(
        image=key.image_id,
        command=["trimo-waiter"],
        workspace=slot.path / "workspace",
        context_dir=slot.path / "context",
        out_dir=slot.path / "context" / "out",
        home=slot.path / "home",
        user=key.user,
        network=key.network,
        network_name=network_name,
        dns=tuple(egress.DEAD_DNS) if key.network == "allowlist" else (),
        resources=key.resources,
        labels={LABEL_RUNNER: key.runner_id, LABEL_WARM: "1"},
        name=name,
    )


@dataclass
class WarmBox:
    """A started container waiting for one run."""

    key: BoxKey
    container: Container
    slot: Slot
    kwargs: dict[str, Any]
    """What the container was created with."""
    entrypoint: list[str]
    joined: tuple[EgressProxy, Joined] | None = None
    """Its network, for `allowlist`: made by that proxy, with the proxy on it."""
    _writer: int | None = field(default=None, repr=False)

    def hold(self, timeout: float = HOLD_SECONDS) -> None:
        """Wait for its waiter to open the pipe, and hold the writing end from then on: the
        box is ready. TrimoError when the waiter did not come."""
        deadline = time.monotonic() + timeout
        tries = 0
        while True:
            try:
                self._writer = os.open(self.slot.go, os.O_WRONLY | os.O_NONBLOCK)
                return
            except OSError as exc:
                if exc.errno != errno.ENXIO or time.monotonic() > deadline:
                    raise TrimoError(
                        f"A sandbox started ahead did not wait for a run: {exc}"
                    ) from exc
            tries += 1
            if tries % 50 == 0:
                self.container.reload()
                if self.container.status != "running":
                    raise TrimoError("A sandbox started ahead ended before it waited for a run.")
            time.sleep(0.01)

    def claim(self) -> bool:
        """Whether its waiter is still there (its pipe has a reader)."""
        if self._writer is None:
            return False
        poll = select.poll()
        poll.register(self._writer, select.POLLOUT)
        return not any(events & (select.POLLERR | select.POLLHUP) for _, events in poll.poll(0))

    def misfits(self, spec: ContainerSpec, image_id: str) -> list[str]:
        """What the run of `spec` (its image `image_id`) asks for that this box has not."""
        return misfits(self.kwargs, {**create_kwargs(spec), "image": image_id}, spec)

    def begin(self, spec: ContainerSpec, timeout: float = WRITE_SECONDS) -> None:
        """Give the box `spec`'s directories, environment and command: the run begins."""
        run = create_kwargs(spec)
        message = go_message(run["environment"], [*self.entrypoint, *spec.command])
        if message is None or self._writer is None:
            raise TrimoError("The run's variables cannot be handed to a sandbox started ahead.")
        self.slot.fill(spec)
        deadline = time.monotonic() + timeout
        poll = select.poll()
        poll.register(self._writer, select.POLLOUT)
        try:
            view = memoryview(message)
            while view:
                left = deadline - time.monotonic()
                if left <= 0 or not poll.poll(left * 1000):
                    raise TrimoError("The sandbox started ahead did not take its run in time.")
                view = view[os.write(self._writer, view) :]
        except OSError as exc:
            raise TrimoError(f"The sandbox started ahead went away before its run: {exc}") from exc
        finally:
            self._close_writer()

    def discard(self) -> None:
        """Remove its container, slot and network (a box no run took, or after its run)."""
        self._close_writer()
        with contextlib.suppress(docker.errors.APIError):
            self.container.remove(force=True)
        self.slot.empty()
        if self.joined is not None:
            proxy, joined = self.joined
            self.joined = None
            proxy.spares.done(joined)

    def _close_writer(self) -> None:
        if self._writer is not None:
            os.close(self._writer)
            self._writer = None


def make_box(client: docker.DockerClient, key: BoxKey, slot: Slot, name: str) -> WarmBox:
    """A box for `key`, started (with its own network for `allowlist`)."""
    joined = None
    slot.make()
    try:
        if key.network == "allowlist":
            proxy = egress.proxy_for(client, key.runner_id, key.upstream_proxy)
            joined = (proxy, proxy.new_network())
        network_name = str(joined[1][0].name) if joined else None
        kwargs = create_kwargs(template(key, slot, name, network_name))
        kwargs["volumes"] = slot.volumes()
        kwargs["entrypoint"] = ["bash", "-c", WAITER]
        config = client.images.get(key.image_id).attrs.get("Config") or {}
        container = client.containers.create(**kwargs)
    except BaseException:
        slot.empty()
        if joined is not None:
            joined[0].spares.done(joined[1])
        raise
    box = WarmBox(key, container, slot, kwargs, list(config.get("Entrypoint") or []), joined)
    try:
        container.start()
        box.hold()
    except BaseException:
        box.discard()
        raise
    return box


def note(pipeline: Path, box: WarmBox) -> None:
    """Say in the pipeline's directory which box its run is in: a box has no label of the
    run's, and a process that takes over a killed one's runs must find it (`forget`)."""
    (pipeline / BOX_FILE).write_text(str(box.container.id))


def forget(client: docker.DockerClient, pipeline: Path) -> None:
    """Remove the box noted for the pipeline's last run, if it is still there."""
    noted = pipeline / BOX_FILE
    with contextlib.suppress(FileNotFoundError):
        container_id = noted.read_text().strip()
        if re.fullmatch(r"[0-9a-f]{12,64}", container_id):
            with contextlib.suppress(docker.errors.APIError):
                client.containers.get(container_id).remove(force=True)
        noted.unlink()


class WarmContainer(AgentContainer):
    """A run's container that is a warm box: started by handing the box the run."""

    def __init__(self, client: docker.DockerClient, spec: ContainerSpec, box: WarmBox) -> None:
        super().__init__(client, replace(spec, name=box.container.name), box.container)
        self.box = box

    def start(self) -> None:
        self.box.begin(self.spec)

    def first_line(self) -> str:
        line = super().first_line()
        if line != READY_LINE and self.box.container.wait(timeout=10).get("StatusCode") == (
            WAITER_FAILED
        ):
            raise TrimoError("The sandbox started ahead could not begin the run.")
        return line

    def remove(self) -> None:
        super().remove()
        self.box.joined = None  # the run's network attachment lets go of the network
        self.box.discard()
