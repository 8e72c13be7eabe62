"""One locked-down container per run, with docker-py."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from itertools import chain, islice
from pathlib import Path
from typing import Any, TypedDict

import docker
import docker.errors
import docker.types
import requests
from docker.models.containers import Container

from runner.contract import NetworkMode
from runner.errors import DockerUnavailable, TrimoError
from runner.eventcap import CUT_MARKER
from runner.job import Resources
from runner.printable import printable

LABEL_RUNNER = "dev.trimo.runner"
LABEL_RUN = "dev.trimo.run"
LABEL_PIPELINE = "dev.trimo.pipeline"
WORKSPACE_MOUNT = "/workspace"
CONTEXT_MOUNT = "/trimo"
OUT_MOUNT = "/trimo/out"
CODEX_HOME_MOUNT = "/trimo/codex"
HOME_MOUNT = "/home/agent"
SANDBOX_LABEL = "dev.trimo.sandbox"
SANDBOX_VERSION = "3"
"""The image's `trimo-entrypoint`, `trimo-sync` and `trimo-export` contract."""
READY_LINE = "trimo:workspace-ready"
MAX_LINE_BYTES = 256 * 1024
EXPORT_SECONDS = 300
TAIL_LINES = 40
TAIL_CHARS = 6000
KILLED = 137
"""The exit code of a container whose process was killed (128 + SIGKILL)."""
OOM_EVENT_SECONDS = 3.0
"""How long a killed container's out-of-memory flag is waited for: on a busy machine
Docker's event of it came after the exit."""
OOM_ASK_SECONDS = 0.1
LOG_LIMIT = {"type": "json-file", "config": {"max-size": "256m", "max-file": "2"}}
"""Docker keeps a container's output on the host's disk: at most this much of it. Lines
written while Docker rotates the file can be lost to a follower, so rotation is rare."""
SCRATCH = {
    "/tmp": "rw,nosuid,nodev,size=1g,mode=1777",
    "/var/tmp": "rw,nosuid,nodev,size=256m,mode=1777",
}
"""The only writable places outside the mounts: the image's own filesystem is read-only,
so nothing the agent writes escapes its disk limit (tmpfs counts against its memory)."""


@dataclass(frozen=True)
class ContainerSpec:
    """Everything that decides what the agent's container can do."""

    image: str
    command: list[str]
    workspace: Path
    context_dir: Path
    """Read-only at /trimo: the context files and, when there is one, sync.bundle."""
    out_dir: Path
    """Writable at /trimo/out: where `trimo-export` leaves the bundle for the runner."""
    home: Path | None
    user: str
    network: NetworkMode
    resources: Resources
    network_name: str | None = None
    """The run's own Docker network (`allowlist`, `bridge`; runner.network.tenant)."""
    dns: tuple[str, ...] = ()
    """DNS upstreams for Docker's resolver; a dead one keeps outside names from resolving."""
    address: str | None = None
    """Its IPv4 address on `network_name`, when it must be known before it starts."""
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    name: str | None = None
    writable: Mapping[Path, str] = field(default_factory=dict)
    """More host directories of the run's own, mounted writable (host path → container path)."""


class BoxDirs(TypedDict):
    """A sandbox's own directories, as `ContainerSpec` takes them."""

    workspace: Path
    context_dir: Path
    out_dir: Path
    home: Path


def box_dirs(box: Path) -> BoxDirs:
    """The directories of a sandbox made whole under `box` (a check, a setup, a preview)."""
    return BoxDirs(
        workspace=box / "workspace",
        context_dir=box / "context",
        out_dir=box / "out",
        home=box / "home",
    )


@dataclass(frozen=True)
class ExitInfo:
    exit_code: int
    oom_killed: bool


def create_kwargs(spec: ContainerSpec) -> dict[str, Any]:
    """docker-py arguments for `spec`: pure, so the policy is testable on its own."""
    return {
        "image": spec.image,
        "command": spec.command,
        "name": spec.name,
        "user": spec.user,
        "working_dir": WORKSPACE_MOUNT,
        "environment": {"HOME": HOME_MOUNT, **spec.env},
        "labels": dict(spec.labels),
        "volumes": mounts(spec),
        **_network_kwargs(spec),
        **({"dns": list(spec.dns)} if spec.dns else {}),
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "mem_limit": spec.resources.memory,
        "memswap_limit": spec.resources.memory,
        "nano_cpus": int(spec.resources.cpus * 1e9),
        "pids_limit": spec.resources.pids,
        "init": True,
        "read_only": True,
        "tmpfs": dict(SCRATCH),
        "log_config": LOG_LIMIT,
        "privileged": False,
        "stdin_open": False,
        "tty": False,
        "detach": True,
    }


def _network_kwargs(spec: ContainerSpec) -> dict[str, Any]:
    if spec.address and spec.network_name:
        endpoint = docker.types.EndpointConfig("1.41", ipv4_address=spec.address)
        return {"network": spec.network_name, "networking_config": {spec.network_name: endpoint}}
    return {"network_mode": spec.network_name or spec.network}


def split_lines(chunks: Iterable[bytes], max_bytes: int = MAX_LINE_BYTES) -> Iterator[str]:
    """Text lines from a byte stream. A line longer than `max_bytes` is cut there and the rest
    of it dropped, so an agent that never prints a newline cannot fill the runner's memory."""
    pending = bytearray()
    dropping = False
    for chunk in chunks:
        start = 0
        while start < len(chunk):
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            if not dropping:
                pending += piece[: max_bytes + 1 - len(pending)]
                if len(pending) > max_bytes:
                    yield _text(pending[:max_bytes]) + CUT_MARKER
                    pending.clear()
                    dropping = True
            if end < 0:
                break
            if not dropping:
                yield _text(pending)
            pending.clear()
            dropping = False
            start = end + 1
    if pending and not dropping:
        yield _text(pending)


class Followed:
    """Docker's stamped log messages passed on without their stamps: counted, and the last
    kept whole."""

    def __init__(self, messages: Iterable[bytes]) -> None:
        self._messages = messages
        self.count = 0
        self.last = b""

    def __iter__(self) -> Iterator[bytes]:
        for message in self._messages:
            self.count += 1
            self.last = message
            yield unstamped(message)


def unstamped(message: bytes) -> bytes:
    """A log message less the time stamp Docker put before it."""
    return message.partition(b" ")[2]


def without_first(lines: Iterable[str], line: str) -> Iterator[str]:
    """`lines` less the first that equals `line`: the entrypoint's status, wherever Docker put
    it among stderr's lines (a copy the agent prints is the same text, so either may go)."""
    dropped = False
    for each in lines:
        if not dropped and each == line:
            dropped = True
            continue
        yield each


def _text(raw: bytes | bytearray) -> str:
    return bytes(raw).decode("utf-8", errors="replace").rstrip("\r")


def mounts(spec: ContainerSpec) -> dict[str, dict[str, str]]:
    found = {
        str(spec.workspace): {"bind": WORKSPACE_MOUNT, "mode": "rw"},
        str(spec.context_dir): {"bind": CONTEXT_MOUNT, "mode": "ro"},
        str(spec.out_dir): {"bind": OUT_MOUNT, "mode": "rw"},
    }
    if spec.home is not None:
        found[str(spec.home)] = {"bind": HOME_MOUNT, "mode": "rw"}
    for source, target in spec.writable.items():
        found[str(source)] = {"bind": target, "mode": "rw"}
    return found


def export_command(
    out_name: str, known: list[str], commit_message: str | None, after: str | None = None
) -> list[str]:
    """`trimo-export` in the sandbox, bounded in time so a stuck git cannot hold the runner:
    at the end with `commit_message`, while the agent runs with `after` (the pushed tip)."""
    options = ["--commit", commit_message] if commit_message is not None else []
    options += ["--after", after] if after is not None else []
    return [
        "timeout",
        str(EXPORT_SECONDS),
        "trimo-export",
        *options,
        f"{OUT_MOUNT}/{out_name}",
        *known,
    ]


def run_helper(client: docker.DockerClient, spec: ContainerSpec, command: list[str]) -> None:
    """Run `command` in a short-lived sandbox on the same workspace: the agent's uid, no
    network, no home, the same limits. Its output is not read (it leaves a file)."""
    helper = replace(
        spec,
        command=command,
        home=None,
        network="none",
        network_name=None,
        dns=(),
        env={},
        writable={},
        name=f"{spec.name}-save" if spec.name else None,
    )
    container = AgentContainer(client, helper)
    try:
        container.start()
        with contextlib.suppress(requests.RequestException, docker.errors.APIError):
            container.wait(timeout=EXPORT_SECONDS + 30)
    finally:
        container.remove()


class AgentContainer:
    """A started container: its output lines, its exit, stopping and removal."""

    def __init__(
        self, client: docker.DockerClient, spec: ContainerSpec, made: Container | None = None
    ) -> None:
        """Creates the container for `spec`, or takes `made` (created for it)."""
        self._client = client
        self.spec = spec
        self._stopped = False
        self._container: Container = made if made is not None else self._create()

    def _create(self) -> Container:
        spec = self.spec
        try:
            return self._client.containers.create(**create_kwargs(spec))
        except docker.errors.ImageNotFound as exc:
            raise TrimoError(
                f"The image {spec.image!r} is not on this machine.",
                "build it with `trimo image build`",
            ) from exc
        except docker.errors.APIError as exc:
            raise TrimoError(f"Docker refused to create the container: {exc.explanation}") from exc
        except docker.errors.DockerException as exc:
            raise DockerUnavailable(f"Docker is not reachable: {exc}") from exc

    @property
    def id(self) -> str:
        return str(self._container.id)

    def start(self) -> None:
        try:
            self._container.start()
        except docker.errors.APIError as exc:
            raise TrimoError(f"Docker could not start the container: {exc.explanation}") from exc

    def lines(self) -> Iterator[str]:
        """Output lines (stdout and stderr) until the container ends.

        Docker's following stream can end before the container's log does when the
        container exits: 1 run of `seq 20000` in 20 here lost its last 7,000 lines, and a
        last line without a newline went missing 1 run in 10. Once the stream ends, the
        log's last message is asked for; when it is not the last one the stream gave, the
        log is read again, past the messages already given."""
        followed = Followed(
            self._container.logs(
                stream=True, follow=True, stdout=True, stderr=True, timestamps=True
            )
        )
        yield from split_lines(chain(followed, self._missed(followed)))

    def _missed(self, followed: Followed) -> Iterator[bytes]:
        """The log's messages after the first `followed.count`, when the following stream
        ended before the log's last message (stamped to the nanosecond, so a repeated line
        is told apart)."""
        logs = self._container.logs
        try:
            if logs(stdout=True, stderr=True, timestamps=True, tail=1) == followed.last:
                return
            log = logs(stream=True, follow=False, stdout=True, stderr=True, timestamps=True)
            yield from (unstamped(message) for message in islice(log, followed.count, None))
        except (requests.RequestException, docker.errors.APIError):
            return

    def log_end(self, lines: int, max_bytes: int) -> Iterator[bytes]:
        """The raw end of its output (stdout and stderr) once it has ended: its last `lines`
        lines, and never more than `max_bytes` read (a line can be as long as it likes)."""
        try:
            stream = self._container.logs(stream=True, follow=False, tail=lines)
        except docker.errors.APIError:
            return
        left = max_bytes
        try:
            for chunk in stream:
                yield chunk[:left]
                left -= len(chunk)
                if left <= 0:
                    return
        except (requests.RequestException, docker.errors.APIError):
            return
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()

    def first_line(self) -> str:
        """The first line of stdout alone, once written ("" when it ends without one).

        Docker copies stdout and stderr apart and keeps only the order within each, so on a
        busy machine a line the agent writes to stderr can come before the entrypoint's
        status in `lines()`: the status is read from stdout, where nothing precedes it. A
        following stream that ends with no line (it can end early when the container
        exits) is followed by a read of the log as it is."""
        for follow in (True, False):
            stream = self._container.logs(stream=True, follow=follow, stdout=True, stderr=False)
            try:
                line = next(split_lines(stream), None)
            finally:
                stream.close()
            if line is not None:
                return line
        return ""

    def exec(self, command: list[str], timeout: float = EXPORT_SECONDS + 10) -> bool:
        """Run `command` in the running container as its user, and wait for it to end.

        Its output is never read: an agent can hold the exec's stdout open for ever. The
        command leaves what it has to say in a file. False when it did not end in time."""
        api = self._client.api
        try:
            exec_id = api.exec_create(
                self.id, command, stdout=False, stderr=False, user=self.spec.user,
                workdir=WORKSPACE_MOUNT,
            )["Id"]  # fmt: skip
            api.exec_start(exec_id, detach=True)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if not api.exec_inspect(exec_id).get("Running"):
                    return True
                time.sleep(0.02)
        except docker.errors.APIError:
            pass
        return False

    def wait(self, timeout: float = 60, oom_seconds: float = OOM_EVENT_SECONDS) -> ExitInfo:
        """How it ended. Docker learns of an out-of-memory kill from an event of its own,
        which can come after the exit: a container killed (137) that Trimo did not stop is
        asked again for up to `oom_seconds`."""
        result = self._container.wait(timeout=timeout)
        self._container.reload()
        state = self._container.attrs.get("State", {})
        exit_code = int(result.get("StatusCode", state.get("ExitCode", -1)))
        oom_killed = bool(state.get("OOMKilled", False))
        deadline = time.monotonic() + oom_seconds
        while exit_code == KILLED and not oom_killed and not self._stopped:
            if time.monotonic() >= deadline:
                break
            time.sleep(OOM_ASK_SECONDS)
            self._container.reload()
            oom_killed = bool(self._container.attrs.get("State", {}).get("OOMKilled", False))
        return ExitInfo(exit_code=exit_code, oom_killed=oom_killed)

    def stop(self, grace_seconds: float) -> None:
        """SIGTERM, then SIGKILL after the grace period."""
        self._stopped = True
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            self._container.stop(timeout=max(0, int(grace_seconds)))

    def remove(self) -> None:
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            self._container.remove(force=True)


def log_tail(client: docker.DockerClient, container_id: str) -> str:
    """A container's last lines, printable, for a person to read."""
    try:
        raw = client.containers.get(container_id).logs(tail=TAIL_LINES, stdout=True, stderr=True)
    except docker.errors.APIError:
        return ""
    text = printable(bytes(raw).decode("utf-8", errors="replace")).strip("\n")
    return text[-TAIL_CHARS:]
