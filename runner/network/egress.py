"""The filtering egress proxy: one container per runner, one tinyproxy per run.

    proxy = EgressProxy.ensure(client, runner_id)         # once per runner
    attachment = proxy.attach(run_id, allowed_hosts)     # per run, ~0.1 s
    ... create the agent's container on attachment.network with attachment.env ...
    blocked = attachment.release()                       # {"example.org": 3}

Each run gets an `--internal` network of its own (runner.network.tenant): no route
out, no way to the host or to any other tenant (runner.network.firewall), and
Docker's DNS there answers nothing from outside (the container is given a dead
upstream resolver). The proxy container joins it and a normal bridge network of its
own. On it the run has its own tinyproxy, listening only on the proxy's address in
that network, with its own credentials, allowlist, uid, connection cap and log
budget, so no run can reach, hold, fill or stop another run's proxy
(sandbox/proxy/trimo-egress). tinyproxy resolves names itself and allows HTTP and
CONNECT (443 and 80) only to allowed names; TLS is tunnelled, never intercepted.
Names resolving to private, loopback, link-local or metadata addresses are refused
by the proxy container's firewall, but for the operator's endpoints (its gateways, by
name or address), which only their run's tinyproxy may reach. An upstream proxy
(TRIMO_UPSTREAM_PROXY, or this host's HTTPS_PROXY) is chained to. A runner has networks
made ahead for its next runs, each handed to one run only (runner.ahead), so a run
does not wait for Docker to make one.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import os
import re
import secrets
import socket
import stat
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import docker
import docker.errors
from docker.models.containers import Container
from docker.models.networks import Network

from runner.agents.endpoints import Endpoint
from runner.ahead import MadeAhead
from runner.errors import TrimoError
from runner.network import tenant
from runner.network.hosts import clean_hosts, tinyproxy_filter
from runner.network.proxyimage import LABEL_EGRESS, PROXY_IMAGE, ensure_image

PORT = 3128
"""Each run's tinyproxy listens here, on the proxy's address in the run's own network."""
MAX_CLIENTS = 64
"""A run's proxy serves this many connections at once (also the proxy's firewall cap)."""
SLOTS = 100
"""The most runs one proxy container serves at once (each a uid of its own)."""
LOG_BYTES = 512 * 1024
"""A run's proxy log stops growing here (later lines are dropped, the proxy goes on)."""
SLOT_BYTES = LOG_BYTES + 128 * 1024
"""Room for one run's files in the proxy's tmpfs."""
SPARE_MAX = 8
"""The most networks a runner makes ahead (one for each run it may start at once)."""
ASK_SECONDS = 120.0
"""How long a request to the proxy may take (tinyproxy starting on a busy machine)."""
MAX_ANSWER = 8 << 20
"""The most of an answer of the proxy's that is read (a stop's report of blocked hosts)."""
CONTROL_MOUNT = "/run/trimo-control"
"""Where the proxy container has its control directory (sandbox/proxy/trimo-egress)."""
DEAD_DNS = ["127.0.0.1"]
"""The agent container's DNS upstream: nothing listens there, so outside names never resolve."""
NO_PROXY = "localhost,127.0.0.1,::1"
_BLOCKED = re.compile(r'Proxying refused on filtered (?:domain|url) "([^"]+)"')

BlockedHosts = dict[str, int]
MAX_BLOCKED_HOSTS = 50

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Upstream:
    """A proxy the egress proxy chains to."""

    host: str
    port: int
    username: str = ""
    password: str = ""

    @property
    def tinyproxy_line(self) -> str:
        auth = ""
        if self.username:
            auth = f"{quote(self.username, safe='')}:{quote(self.password, safe='')}@"
        return f"Upstream http {auth}{self.host}:{self.port}"


def parse_upstream(url: str) -> Upstream:
    """`http://[user:pass@]host:port` as an `Upstream`; TrimoError when it is not one."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    try:
        port = parts.port or 3128
    except ValueError as exc:
        raise TrimoError(f"The upstream proxy {url!r} has a bad port.") from exc
    if parts.scheme != "http" or not parts.hostname:
        raise TrimoError(
            f"The upstream proxy {url!r} is not an http:// proxy URL.",
            "set TRIMO_UPSTREAM_PROXY=http://host:port",
        )
    return Upstream(
        host=parts.hostname,
        port=port,
        username=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
    )


def upstream_from_env(explicit: str | None, environ: Mapping[str, str] = os.environ) -> str | None:
    """The upstream proxy URL: TRIMO_UPSTREAM_PROXY first, else this host's HTTPS_PROXY."""
    for value in (explicit, environ.get("HTTPS_PROXY"), environ.get("https_proxy")):
        if value and value.strip():
            return value.strip()
    return None


def blocked_hosts(log: str, most: int = MAX_BLOCKED_HOSTS) -> BlockedHosts:
    """The refused host names in a tinyproxy log with how often each was refused: the `most`
    refused ones (an agent can try a million names)."""
    counts = Counter(match.lower()[:253] for match in _BLOCKED.findall(log))
    return dict(counts.most_common(most))


def tinyproxy_config(
    run_dir: str,
    listen: str,
    user: str,
    password: str,
    upstream: Upstream | None,
    connect_ports: Iterable[int] = (),
) -> str:
    lines = [
        f"Port {PORT}",
        f"Listen {listen}",
        "Timeout 900",
        f"MaxClients {MAX_CLIENTS}",
        f'LogFile "{run_dir}/log"',
        "LogLevel Notice",
        f'PidFile "{run_dir}/pid"',
        f"BasicAuth {user} {password}",
        f'Filter "{run_dir}/filter"',
        "FilterType ere",
        "FilterURLs Off",
        "FilterDefaultDeny Yes",
        *(f"ConnectPort {p}" for p in sorted({443, 80, *connect_ports}, reverse=True)),
        "DisableViaHeader Yes",
        "XTinyproxy No",
    ]
    if upstream is not None:
        lines.append(upstream.tinyproxy_line)
    return "\n".join(lines)


Joined = tuple[Network, str]
"""A network with the proxy on it and nothing else, and the proxy's address there."""


@dataclass
class NetworkAttachment:
    """How one run's container reaches the network, and how to let go of it afterwards."""

    network: str
    """The container's `network_mode`: `none`, or the run's own network."""
    env: dict[str, str] = field(default_factory=dict)
    dns: list[str] | None = None
    secret: str | None = None
    """The run's proxy credential (also inside `env`): scrub it like any secret."""
    _release: Callable[[], BlockedHosts] | None = None
    _blocked: BlockedHosts | None = None
    _starting: Future[None] | None = None

    def ready(self) -> None:
        """Wait until the run's way out works (its proxy may start while its container is
        made); TrimoError when it could not start."""
        if self._starting is not None:
            self._starting.result()

    def release(self) -> BlockedHosts:
        """Close the run's way out; the hosts it was refused, with counts. Idempotent."""
        if self._starting is not None:
            with contextlib.suppress(Exception):
                self._starting.result()
        if self._blocked is None:
            self._blocked = self._release() if self._release is not None else {}
        return self._blocked


def direct(mode: str) -> NetworkAttachment:
    """`none`: no network at all."""
    return NetworkAttachment(network=mode)


def bridged(client: docker.DockerClient, runner_id: str) -> NetworkAttachment:
    """`bridge`: a network of the run's own with a way to public addresses only."""
    network = tenant.create(client, runner_id, internal=False)

    def release() -> BlockedHosts:
        tenant.remove(network)
        return {}

    return NetworkAttachment(network=str(network.name), _release=release)


def _short(runner_id: str) -> str:
    return hashlib.sha256(runner_id.encode()).hexdigest()[:12]


def control_socket(runner_id: str) -> Path:
    """Where `runner_id`'s proxy answers this host (a directory only its user may enter;
    short, as a socket's path must be)."""
    if os.geteuid() == 0:
        base = Path("/run/trimo")
    elif runtime := os.environ.get("XDG_RUNTIME_DIR"):
        base = Path(runtime) / "trimo"
    else:
        base = Path.home() / ".trimo-run"  # never a shared place such as /tmp
    return base / f"egress-{_short(runner_id)}" / "egress.sock"


def _answered_by_docker(conn: socket.socket) -> None:
    """TrimoError unless the socket's other end is root's or this user's (the proxy's
    socat, as Docker runs it), and not someone who made the path meanwhile."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    if uid not in (0, os.geteuid()):
        raise TrimoError(f"The egress proxy's socket is answered by uid {uid}: not asked.")


def _make_private(directory: Path) -> None:
    """`directory` and its parent made when missing, this user's only; TrimoError when one
    is not a directory of this user's (someone else's, or a link)."""
    for path in (directory.parent, directory):
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
        found = path.lstat()
        if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.geteuid():
            raise TrimoError(f"{path} is not a directory of this user's: the egress proxy "
                             "cannot be asked there")  # fmt: skip
        path.chmod(0o700)


class EgressProxy:
    """This runner's egress proxy container, its outward network, and the networks made
    ahead for its next runs."""

    def __init__(
        self,
        client: docker.DockerClient,
        container: Container,
        runner_id: str,
        upstream: Upstream | None,
        spare: int = 0,
    ) -> None:
        self._client = client
        self.container = container
        self.runner_id = runner_id
        self.upstream = upstream
        self.outward = f"{container.name}-out"
        self.spares: MadeAhead[Joined] = MadeAhead(
            self.new_network, self._discard_joined, min(spare, SPARE_MAX)
        )

    @classmethod
    def ensure(
        cls,
        client: docker.DockerClient,
        runner_id: str,
        upstream_url: str | None = None,
        image: str = PROXY_IMAGE,
        spare: int = 0,
    ) -> EgressProxy:
        """This runner's proxy, started if it is not running (about a second, once), making
        `spare` networks ahead for the next runs (at most SPARE_MAX)."""
        ensure_image(client, image)
        key = _short(runner_id)
        name = f"trimo-egress-{key}"
        labels = {LABEL_EGRESS: runner_id}
        outward = _ensure_network(client, f"{name}-out", labels)
        upstream = parse_upstream(upstream_url) if upstream_url else None
        if upstream is not None:
            upstream = _reachable_upstream(upstream, outward)
        exempt = f"{upstream.host}:{upstream.port}" if upstream else ""
        image_id = client.images.get(image).id
        control = control_socket(runner_id)
        _make_private(control.parent)
        config = hashlib.sha256(f"{image_id}\0{exempt}\0{control}".encode()).hexdigest()[:12]
        container = _running(client, name)
        if container is not None and (
            container.labels.get(f"{LABEL_EGRESS}.config") != config or not control.is_socket()
        ):
            container.remove(force=True)
            container = None
        if container is None:
            container = _start(client, name, image, outward, exempt, labels, config, control)
        proxy = cls(client, container, runner_id, upstream, spare)
        proxy.spares.fill()
        return proxy

    def attach(
        self,
        run_id: str,
        allowed_hosts: Iterable[str],
        operator: Iterable[Endpoint] = (),
        wait: bool = True,
        joined: Joined | None = None,
    ) -> NetworkAttachment:
        """A network and a tinyproxy for this run only, allowing exactly `allowed_hosts`
        (names) and the operator's endpoints (names or addresses, reached even when private).
        With `wait` false the proxy starts meanwhile: call `ready()` before the run's
        container starts. `joined`: a network of this proxy's that no run has had (a
        prepared sandbox's), else one made ahead is taken."""
        hosts, errors = clean_hosts(allowed_hosts)
        if errors:
            raise TrimoError("Allowed hosts: " + "; ".join(errors))
        operator = list(operator)
        allowed = tinyproxy_filter([*hosts, *(e.host for e in operator)]) or "^$"
        ports = [e.port for e in operator]
        exempt = " ".join(f"{e.host}:{e.port}" for e in operator if ":" not in e.host)
        password = secrets.token_urlsafe(18)
        joined = joined or self.spares.take()
        network, address = joined
        conf = tinyproxy_config(
            f"/run/trimo/{run_id}/p", address, "run", password, self.upstream, ports
        )

        def start() -> None:
            try:
                code, output = self.ask("start", run_id, conf, allowed, exempt)
            except TrimoError as exc:
                code, output = 1, str(exc)
            if code != 0:
                text = output.strip()
                raise TrimoError(f"The egress proxy could not start for this run: {text[-400:]}")

        starting = None
        if wait:
            try:
                start()
            except TrimoError:
                self._stop(run_id, joined)  # whatever of it started (its slot, its rules)
                raise
        else:
            starting = _starter.submit(start)
        url = f"http://run:{password}@{address}:{PORT}"
        env = {name: url for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")} | {
            "NO_PROXY": NO_PROXY,
            "no_proxy": NO_PROXY,
        }
        return NetworkAttachment(
            network=str(network.name),
            env=env,
            dns=DEAD_DNS,
            secret=password,
            _release=lambda: self._stop(run_id, joined),
            _starting=starting,
        )

    def remove(self) -> None:
        """Stop the proxy and remove its networks (its runs lose their way out)."""
        with contextlib.suppress(docker.errors.APIError):
            self.container.remove(force=True)
        self.spares.close()
        with contextlib.suppress(docker.errors.APIError):
            self._client.networks.get(self.outward).remove()

    def new_network(self) -> Joined:
        """A new network with the proxy on it and nothing else, and the proxy's address there."""
        network = tenant.create(
            self._client, self.runner_id, internal=True, labels={LABEL_EGRESS: self.runner_id}
        )
        try:
            network.connect(self.container)
            network.reload()
        except docker.errors.APIError as exc:
            self._discard(network)
            raise TrimoError(f"The egress proxy could not join a run's network: {exc}") from exc
        for endpoint in (network.attrs.get("Containers") or {}).values():
            if endpoint.get("Name") == self.container.name:
                return network, str(endpoint.get("IPv4Address", "")).split("/")[0]
        self._discard(network)
        raise TrimoError("The egress proxy is not on the run's network.")

    def _discard_joined(self, joined: Joined) -> None:
        self._discard(joined[0])

    def _discard(self, network: Network) -> None:
        with contextlib.suppress(docker.errors.APIError):
            network.disconnect(self.container, force=True)
        tenant.remove(network)

    def ask(self, *fields: str, timeout: float = ASK_SECONDS) -> tuple[int, str]:
        """The proxy's answer to one request (sandbox/proxy/trimo-egress `handle`): its
        status and output. TrimoError when it does not answer."""
        if any("\0" in field for field in fields):
            raise TrimoError("A request to the egress proxy cannot hold a NUL.")
        chunks: list[bytes] = []
        size = 0
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(timeout)
                _connect(conn, control_socket(self.runner_id), timeout)
                _answered_by_docker(conn)
                conn.sendall(b"".join(field.encode() + b"\0" for field in fields))
                conn.shutdown(socket.SHUT_WR)
                while (chunk := conn.recv(1 << 16)) and size < MAX_ANSWER:
                    chunks.append(chunk)
                    size += len(chunk)
        except OSError as exc:
            raise TrimoError(f"The egress proxy did not answer: {exc}") from exc
        text = b"".join(chunks)[:MAX_ANSWER].decode(errors="replace")
        body, _, last = text.rstrip("\n").rpartition("\n")
        status = last.removeprefix("trimo-egress-exit ")
        if last == status or not status.isdigit():
            return 1, f"{text[-400:]} (the egress proxy's answer was cut short)"
        return int(status), body

    def _stop(self, run_id: str, joined: Joined) -> BlockedHosts:
        try:
            _code, output = self.ask("stop", run_id)
        except TrimoError as exc:
            log.warning("run %s: its egress proxy was not stopped (%s)", run_id, exc)
            return {}
        finally:
            self.spares.done(joined)
        return blocked_hosts(output)


def _connect(conn: socket.socket, path: Path, timeout: float) -> None:
    """Connect to the proxy's socket; while its queue of connections not yet accepted is
    full (runs starting together on a busy machine), try again until `timeout`."""
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        try:
            conn.connect(str(path))
            return
        except BlockingIOError:
            if time.monotonic() + pause > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.1)


def attach(
    client: docker.DockerClient,
    mode: str,
    run_id: str,
    allowed_hosts: Iterable[str],
    runner_id: str,
    upstream_url: str | None = None,
    operator: Iterable[Endpoint] = (),
    wait: bool = True,
    joined: tuple[EgressProxy, Joined] | None = None,
) -> NetworkAttachment:
    """The run's network for `mode`: `none`, `bridge` (a network of its own), or `allowlist`
    (a network of its own with only its proxy on it, which lets the operator's endpoints
    through even to private addresses; see `EgressProxy.attach` for `wait`). `joined`: a
    network made by `proxy_for`'s proxy for this run (taken when that proxy still runs)."""
    if mode == "none":
        return direct(mode)
    if mode == "bridge":
        return bridged(client, runner_id)
    if mode != "allowlist":
        raise TrimoError(f"Unknown network mode {mode!r}", "use none, allowlist or bridge")
    proxy = _proxies.get(client, runner_id, upstream_url)
    made_for = joined[1] if joined is not None and joined[0] is proxy else None
    return proxy.attach(run_id, allowed_hosts, operator, wait, made_for)


def proxy_for(client: docker.DockerClient, runner_id: str, upstream_url: str | None) -> EgressProxy:
    """This process's egress proxy for `runner_id`, started when it is not running."""
    return _proxies.get(client, runner_id, upstream_url)


class _ProxyCache:
    """One `EgressProxy` per (engine client, runner, upstream) for this process. The networks
    they made ahead are removed when the process ends (or a proxy is replaced): no other
    process knows them, so they would pile up."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proxies: dict[tuple[int, str, str | None], EgressProxy] = {}
        self.spare = 0
        """How many networks each proxy makes ahead (none unless a runner asks)."""
        atexit.register(self.close)

    def close(self) -> None:
        with self._lock:
            proxies = list(self._proxies.values())
        for proxy in proxies:
            proxy.spares.close()

    def keep_spare(self, count: int) -> None:
        with self._lock:
            self.spare = count
            proxies = list(self._proxies.values())
        for proxy in proxies:
            proxy.spares.keep = min(count, SPARE_MAX)
            proxy.spares.fill()

    def get(
        self, client: docker.DockerClient, runner_id: str, upstream_url: str | None
    ) -> EgressProxy:
        key = (id(client), runner_id, upstream_url)
        with self._lock:
            known = self._proxies.get(key)
        if known is not None and _is_running(known.container) and _answers(runner_id):
            return known
        with self._lock:
            proxy = self._proxies.get(key)
            if proxy is not None and proxy is not known:  # another run replaced it meanwhile
                return proxy
            if proxy is not None:  # it stopped or was removed: made again, its spares go
                proxy.spares.close()
            proxy = EgressProxy.ensure(client, runner_id, upstream_url, spare=self.spare)
            self._proxies[key] = proxy
            return proxy


def keep_spare(count: int) -> None:
    """Have this process's proxies make `count` networks ahead for their runs (at most
    SPARE_MAX): a runner that starts `count` runs at once."""
    _proxies.keep_spare(count)


def close() -> None:
    """Stop making networks ahead and remove those made (when the runner stops)."""
    _proxies.close()


_proxies = _ProxyCache()
_starter = ThreadPoolExecutor(max_workers=8, thread_name_prefix="egress-start")
"""Starts runs' proxies while their containers are made."""


def _answers(runner_id: str) -> bool:
    """Whether the proxy's socket is there (a proxy without it is started anew)."""
    return control_socket(runner_id).is_socket()


def _is_running(container: Container) -> bool:
    try:
        container.reload()
    except docker.errors.NotFound:
        return False
    return bool(container.status == "running")


def _ensure_network(client: docker.DockerClient, name: str, labels: Mapping[str, str]) -> Network:
    """The proxy's own way out (no tenant is ever on it)."""
    try:
        return client.networks.get(name)
    except docker.errors.NotFound:
        pass
    try:
        return tenant.make(client, name, internal=False, labels=labels)
    except TrimoError:
        return client.networks.get(name)  # another process made it first


def _running(client: docker.DockerClient, name: str) -> Container | None:
    try:
        container = client.containers.get(name)
    except docker.errors.NotFound:
        return None
    if container.status != "running":
        container.remove(force=True)
        return None
    return container


def _start(
    client: docker.DockerClient,
    name: str,
    image: str,
    outward: Network,
    exempt: str,
    labels: Mapping[str, str],
    config: str,
    control: Path,
) -> Container:
    try:
        container: Container = client.containers.run(
            image,
            name=name,
            detach=True,
            network=outward.name,
            environment={
                "TRIMO_EGRESS_EXEMPT": exempt,
                "TRIMO_PORT": str(PORT),
                "TRIMO_SLOTS": str(SLOTS),
                "TRIMO_MAX_CLIENTS": str(MAX_CLIENTS),
                "TRIMO_LOG_BYTES": str(LOG_BYTES),
            },
            labels={**labels, f"{LABEL_EGRESS}.config": config},
            cap_drop=["ALL"],
            cap_add=["NET_ADMIN", "SETUID", "SETGID", "CHOWN", "KILL", "DAC_OVERRIDE"],
            security_opt=["no-new-privileges"],
            init=True,
            mem_limit="256m",
            pids_limit=SLOTS * (MAX_CLIENTS + 8) + 64,
            # Each run's files and log live here, each run's log capped (trimo-egress): they
            # fit for every slot at once, and are never on the host's disk.
            tmpfs={"/run/trimo": f"rw,nosuid,nodev,size={SLOTS * SLOT_BYTES},mode=0755"},
            volumes={str(control.parent): {"bind": CONTROL_MOUNT, "mode": "rw"}},
            log_config={"type": "json-file", "config": {"max-size": "16m", "max-file": "1"}},
            restart_policy={"Name": "unless-stopped"},
        )
    except docker.errors.APIError as exc:
        with contextlib.suppress(docker.errors.APIError):
            existing = client.containers.get(name)  # another process started it first
            if existing.status == "running":
                return existing
        raise TrimoError(f"The egress proxy did not start: {exc.explanation or exc}") from exc
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        container.reload()
        if container.status != "running":
            break
        if b"trimo-egress ready" in container.logs():
            return container
        time.sleep(0.05)
    logs = container.logs().decode(errors="replace")[-500:]
    container.remove(force=True)
    raise TrimoError(f"The egress proxy did not start: {logs}")


def _reachable_upstream(upstream: Upstream, outward: Network) -> Upstream:
    """The upstream by address, as the proxy container reaches it (this host's loopback
    becomes the outward network's gateway, so such a proxy must listen there too)."""
    try:
        infos = socket.getaddrinfo(upstream.host, upstream.port, socket.AF_INET, socket.SOCK_STREAM)
    except OSError as exc:
        raise TrimoError(f"The upstream proxy {upstream.host!r} does not resolve: {exc}") from exc
    address = str(infos[0][4][0])
    if address.startswith("127."):
        outward.reload()
        configs = outward.attrs.get("IPAM", {}).get("Config") or [{}]
        address = configs[0].get("Gateway", address)
    return Upstream(address, upstream.port, upstream.username, upstream.password)
