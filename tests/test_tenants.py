"""Tenants never meet on the network (real Docker): every run and preview alone on a network
of its own, with no way to the runner host, to another tenant, to another run's proxy or to
Docker's names of other work; one run's proxy traffic and log never touch another run.

Each attack here was run first against the shared network (it worked), then defended.
"""

from __future__ import annotations

import base64
import contextlib
import io
import ipaddress
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import httpx
import pytest
from docker.models.containers import Container

from runner import leftovers
from runner.cli import host_rules_problem
from runner.errors import TrimoError
from runner.job import RepoRef
from runner.network import EgressProxy, NetworkAttachment, attach, firewall, tenant
from runner.network.egress import LOG_BYTES, MAX_CLIENTS
from runner.network.proxyimage import ensure_image
from runner.previews import sandbox
from runner.previews.job import PreviewRequest
from tests import preview_app
from tests.conftest import side_by_side
from tests.outside import registry_host, registry_url
from tests.test_preview_runner import BRANCH, make_remote

pytestmark = pytest.mark.docker

PROBE_IMAGE = "trimo-test-netprobe"
PROBE_DOCKERFILE = """
FROM {base}
USER root
RUN apt-get update && apt-get install -y --no-install-recommends curl iputils-ping dnsutils \\
 && rm -rf /var/lib/apt/lists/*
USER agent
"""
SERVER = (
    "perl -MIO::Socket::INET -e '$s=IO::Socket::INET->new(LocalPort=>8000,Listen=>9,"
    'ReuseAddr=>1) or die; while($c=$s->accept){print $c "HTTP/1.0 200 OK\\r\\n\\r\\n'
    "tenant-secret\\n\"; close $c}'"
)
PING = (
    "use Socket; socket(my $s, PF_INET, SOCK_DGRAM, 1) or exit 3; "
    "send($s, pack(q(CCnnn), 8, 0, 0, 0, 1), 0, sockaddr_in(0, inet_aton($ARGV[0]))) or exit 2; "
    "vec(my $in = q(), fileno($s), 1) = 1; exit(select($in, undef, undef, 2) ? 0 : 1)"
)
"""An ICMP echo as an unprivileged user may send one (a datagram socket): 0 when answered."""
HOLD = r"""
use IO::Socket::INET;
$| = 1;
my ($host, $port, $count) = @ARGV;
my (@held, $failed);
for (1 .. $count) {
    my $s = IO::Socket::INET->new(PeerAddr => $host, PeerPort => $port, Timeout => 3);
    if ($s) { push @held, $s } elsif (++$failed >= 5) { last }
}
print "held " . scalar(@held) . "\n";
sleep 600;
"""
FLOOD = r"""
use IO::Socket::INET;
my ($host, $port, $auth, $count) = @ARGV;
my $done = 0;
for my $i (1 .. $count) {
    my $s = IO::Socket::INET->new(PeerAddr => $host, PeerPort => $port, Timeout => 3) or next;
    print $s "CONNECT refused-$i.example.com:443 HTTP/1.1\r\n"
        . "Proxy-Authorization: Basic $auth\r\n\r\n";
    my $line = <$s>;
    $done++ if defined $line && $line =~ / 403 /;
    close $s;
}
print "refused $done\n";
"""


@pytest.fixture(scope="module")
def probe_image(docker_client: docker.DockerClient, test_image: str) -> str:
    """The test image plus curl, ping and dig, built once per test image."""
    base_id = docker_client.images.get(test_image).id.split(":")[-1][:12]
    tag = f"{PROBE_IMAGE}:{base_id}"
    try:
        docker_client.images.get(tag)
    except docker.errors.ImageNotFound:
        dockerfile = io.BytesIO(PROBE_DOCKERFILE.format(base=test_image).encode())
        docker_client.images.build(fileobj=dockerfile, tag=tag, rm=True)
    return tag


@pytest.fixture
def runner_id(docker_client: docker.DockerClient) -> Iterator[str]:
    """A runner of its own; its proxy, networks and host rules go with it."""
    ensure_image(docker_client)
    name = f"tenants-{secrets.token_hex(4)}"
    yield name
    leftovers.close(docker_client, name)


@pytest.fixture
def proxy(docker_client: docker.DockerClient, runner_id: str) -> Iterator[EgressProxy]:
    started = EgressProxy.ensure(docker_client, runner_id)
    yield started
    started.remove()


class HostListener:
    """A TCP and a UDP server on every address of this host, recording who reached them."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.reached: list[str] = []
        self._tcp = socket.create_server(("0.0.0.0", self.port))
        self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._udp.bind(("0.0.0.0", self.port))
        self._tcp.settimeout(0.2)
        self._udp.settimeout(0.2)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._accept, daemon=True),
            threading.Thread(target=self._receive, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                conn, peer = self._tcp.accept()
                self.reached.append(f"tcp from {peer[0]}")
                conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nhost-secret\n")
                conn.close()

    def _receive(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                _data, peer = self._udp.recvfrom(2048)
                self.reached.append(f"udp from {peer[0]}")

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self._tcp.close()
        self._udp.close()


@pytest.fixture
def listener() -> Iterator[HostListener]:
    server = HostListener()
    yield server
    server.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        return int(sock.getsockname()[1])


def host_addresses() -> list[str]:
    """Every IPv4 address of this host but loopback (docker0 and the LAN's among them)."""
    out = subprocess.run(
        ["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True
    ).stdout
    found = {line.split()[3].split("/")[0] for line in out.splitlines()}
    return sorted(a for a in found if not ipaddress.ip_address(a).is_loopback)


def gateway(client: docker.DockerClient, network: str) -> str:
    attrs = client.networks.get(network).attrs
    return str(attrs["IPAM"]["Config"][0].get("Gateway") or "")


def probes(addresses: list[str], port: int) -> str:
    """A shell script trying TCP, UDP and ICMP to each address at once; prints
    `<kind> <addr> <rc>` (ICMP: 0 answered, 1 not, 2 or 3 could not even be sent)."""
    lines = []
    for address in addresses:
        lines += [
            f"(timeout 3 bash -c 'exec 3<>/dev/tcp/{address}/{port}; cat <&3'; "
            f"echo tcp {address} $?) &",
            f"(printf udp-probe > /dev/udp/{address}/{port}; echo udp {address} $?) &",
            f"(perl -e '{PING}' {address}; echo icmp {address} $?) &",
        ]
    return "\n".join([*lines, "wait"])


def results(output: str, kind: str) -> dict[str, str]:
    found = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == kind:
            found[parts[1]] = parts[2]
    return found


def start(
    client: docker.DockerClient,
    image: str,
    attachment: NetworkAttachment,
    command: str,
    name: str | None = None,
) -> Container:
    """A container as the agent's: its user, no capabilities, its network and proxy."""
    container: Container = client.containers.run(
        image,
        ["bash", "-c", command],
        name=name,
        detach=True,
        user="1000:1000",
        network_mode=attachment.network,
        environment=attachment.env,
        dns=attachment.dns,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
    )
    return container


def run_in(
    client: docker.DockerClient, image: str, attachment: NetworkAttachment, script: str
) -> str:
    container = start(client, image, attachment, script)
    try:
        container.wait(timeout=180)
        return str(container.logs().decode())
    finally:
        container.remove(force=True)


def address_of(client: docker.DockerClient, container: Container, network: str) -> str:
    container.reload()
    return str(container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"])


@pytest.mark.parametrize("mode", ["allowlist", "bridge"])
def test_a_run_reaches_nothing_on_the_runner_host(
    docker_client: docker.DockerClient,
    probe_image: str,
    runner_id: str,
    listener: HostListener,
    mode: str,
) -> None:
    """Its network's gateway, docker0 and the host's other addresses: TCP, UDP and ICMP."""
    attachment = attach(docker_client, mode, "probe", [registry_host()], runner_id)
    try:
        targets = sorted({gateway(docker_client, attachment.network), *host_addresses()})
        assert "172.17.0.1" in targets
        out = run_in(docker_client, probe_image, attachment, probes(targets, listener.port))
    finally:
        attachment.release()
    assert listener.reached == [], out
    assert "host-secret" not in out
    assert set(results(out, "tcp")) == set(targets), out
    assert all(rc != "0" for rc in results(out, "tcp").values()), out
    assert set(results(out, "icmp").values()) <= {"1", "2"}, out


def preview_request(
    remote: Path, probe_image: str, network: str, pipeline: str, repo: str = "acme/app"
) -> PreviewRequest:
    return PreviewRequest.model_validate(
        {
            "preview_id": f"{pipeline}-{secrets.token_hex(4)}",
            "pipeline": pipeline,
            "repo": RepoRef(full_name=repo, clone_url=str(remote)),
            "branch": BRANCH,
            "image": probe_image,
            "setup": "",
            "command": preview_app.COMMAND,
            "port": 8000,
            "network": network,
            "idle_minutes": 30,
        }
    )


@pytest.fixture
def previews(
    docker_client: docker.DockerClient, tmp_path: Path, runner_id: str
) -> Iterator[sandbox.Host]:
    host = sandbox.Host.of_this_process(docker_client, runner_id, tmp_path / "cache", 1000)
    yield host


def wait_serving(url: str) -> str:
    deadline = time.monotonic() + 60
    while True:
        try:
            return httpx.get(url, timeout=2).text
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def exec_as_tenant(container: Container, script: str) -> str:
    _code, output = container.exec_run(["bash", "-c", script], user="1000:1000")
    return bytes(output).decode(errors="replace")


def test_a_preview_with_network_none_reaches_nothing_on_the_host_but_is_served(
    docker_client: docker.DockerClient,
    probe_image: str,
    previews: sandbox.Host,
    listener: HostListener,
    tmp_path: Path,
) -> None:
    remote = make_remote(tmp_path, "app", "preview-page")
    launched = sandbox.launch(previews, preview_request(remote, probe_image, "none", "acme-app.1"))
    try:
        assert "preview-page" in wait_serving(f"http://{launched.address}:8000/")
        container = docker_client.containers.get(launched.container_id)
        network = next(iter(container.attrs["NetworkSettings"]["Networks"]))
        targets = sorted({gateway(docker_client, network), *host_addresses()})
        out = exec_as_tenant(container, probes(targets, listener.port))
    finally:
        launched.teardown()
    assert listener.reached == [], out
    assert all(rc != "0" for rc in results(out, "tcp").values()), out
    assert set(results(out, "icmp").values()) <= {"1", "2"}, out


def test_runs_and_previews_never_reach_each_other(
    docker_client: docker.DockerClient,
    probe_image: str,
    previews: sandbox.Host,
    proxy: EgressProxy,
    runner_id: str,
    tmp_path: Path,
) -> None:
    """A run reaches neither another repository's preview nor its own pipeline's (only
    their links do), whatever its network; a preview reaches no run; the host reaches
    the previews (the preview proxy's way in)."""
    other = sandbox.launch(
        previews,
        preview_request(make_remote(tmp_path, "other", "other-page"), probe_image,
                        "bridge", "corp-private.7", repo="corp/private"),
    )  # fmt: skip
    own = sandbox.launch(
        previews,
        preview_request(make_remote(tmp_path, "own", "own-page"), probe_image,
                        "allowlist", "acme-app.1"),
    )  # fmt: skip
    allow = proxy.attach("run-allow", [registry_host()])
    bridge = attach(docker_client, "bridge", "run-bridge", [], runner_id)
    server = start(docker_client, probe_image, allow, SERVER)
    try:
        for launched in (other, own):
            assert wait_serving(f"http://{launched.address}:8000/")  # the host reaches them
        targets = [f"http://{other.address}:8000/", f"http://{own.address}:8000/"]
        script = side_by_side(
            *(
                f"echo {url} $(curl -s --noproxy '*' -m 5 -o /dev/null -w '%{{http_code}}' {url})"
                for url in targets
            )
        )
        from_allowlist = run_in(docker_client, probe_image, allow, script)
        from_bridge = run_in(docker_client, probe_image, bridge, script)
        run_address = address_of(docker_client, server, allow.network)
        preview = docker_client.containers.get(other.container_id)
        from_preview = exec_as_tenant(
            preview,
            f"curl -s -m 5 -o /dev/null -w '%{{http_code}}' http://{run_address}:8000/; "
            f"echo ' 'rc=$?",
        )
    finally:
        server.remove(force=True)
        allow.release()
        bridge.release()
        other.teardown()
        own.teardown()
    for out in (from_allowlist, from_bridge):
        assert [line.split()[1] for line in out.strip().splitlines()] == ["000", "000"], out
    assert from_preview.startswith("000"), from_preview


def test_dockers_dns_names_no_other_tenant(
    docker_client: docker.DockerClient, probe_image: str, proxy: EgressProxy
) -> None:
    """PTR and name queries to Docker's resolver about another run's container, whose name
    carries its pipeline (an issue's title), answer nothing."""
    victim = proxy.attach("victim", [])
    name = f"trimo-acme-app.42-secret-merger-plans-{secrets.token_hex(3)}"
    other = start(docker_client, probe_image, victim, "sleep 120", name=name)
    attacker = proxy.attach("attacker", [])
    try:
        victim_address = address_of(docker_client, other, victim.network)
        subnet = ipaddress.ip_network(
            docker_client.networks.get(attacker.network).attrs["IPAM"]["Config"][0]["Subnet"]
        )
        asked = [victim_address, *(str(a) for a in list(subnet.hosts())[:14])]
        script = "; ".join(f"dig +short +time=1 +tries=1 -x {a} @127.0.0.11" for a in asked)
        script += f"; dig +short +time=1 +tries=1 {name} @127.0.0.11"
        out = run_in(docker_client, probe_image, attacker, script)
    finally:
        other.remove(force=True)
        victim.release()
        attacker.release()
    assert "secret" not in out and "acme" not in out, out


def test_another_runs_proxy_is_out_of_reach_and_held_connections_stall_no_one(
    docker_client: docker.DockerClient, probe_image: str, proxy: EgressProxy
) -> None:
    """Run A cannot open a connection to run B's proxy, with any password; A holding
    connections to its own proxy gets at most MAX_CLIENTS of them, and B is answered."""
    a = proxy.attach("holder", [registry_host()])
    b = proxy.attach("victim", [registry_host()])
    b_proxy = b.env["HTTPS_PROXY"].rsplit("@", 1)[1]
    a_proxy = a.env["HTTPS_PROXY"].rsplit("@", 1)[1]
    a_password = a.env["HTTPS_PROXY"].split("run:", 1)[1].split("@", 1)[0]
    holder = None
    try:
        stolen = side_by_side(
            f"r=$(curl -s -m 5 -o /dev/null -w '%{{http_connect}}' "
            f'-x http://run:{a_password}@{b_proxy} {registry_url()}); echo "$r rc=$?"',
            f"r=$(curl -s -m 5 -o /dev/null -w '%{{http_connect}}' -x http://{b_proxy} "
            f'{registry_url()}); echo "$r rc=$?"',
        )
        out = run_in(docker_client, probe_image, a, stolen)
        assert "407" not in out and "200" not in out, out
        assert out.count("000") == 2, out
        host, port = a_proxy.split(":")
        b_host, b_port = b_proxy.split(":")
        holder = start(
            docker_client,
            probe_image,
            a,
            f"cat > /tmp/hold.pl <<'EOF'\n{HOLD}\nEOF\n"
            f"perl /tmp/hold.pl {host} {port} 230 & perl /tmp/hold.pl {b_host} {b_port} 230",
        )
        deadline = time.monotonic() + 90
        while holder.logs().count(b"held") < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        held = sorted(int(line.split()[1]) for line in holder.logs().decode().splitlines())
        assert held == [0, MAX_CLIENTS], held
        started = time.monotonic()
        answered = run_in(
            docker_client,
            probe_image,
            b,
            f"curl -s -m 20 -o /dev/null -w '%{{http_code}}' {registry_url()}",
        )
        assert answered.strip() == "200"
        assert time.monotonic() - started < 15
    finally:
        if holder is not None:
            holder.remove(force=True)
        a.release()
        b.release()


def test_a_log_flood_stays_within_the_runs_budget_and_the_next_run_starts(
    docker_client: docker.DockerClient, probe_image: str, proxy: EgressProxy
) -> None:
    """Refused CONNECTs by the thousand: the run's log stops at its byte budget, its proxy
    goes on serving it, and another run's proxy starts and serves."""
    flooder = proxy.attach("flooder", [registry_host()])
    url = flooder.env["HTTPS_PROXY"]
    credentials = url.split("//", 1)[1].rsplit("@", 1)[0]
    host, port = url.rsplit("@", 1)[1].split(":")
    auth = base64.b64encode(credentials.encode()).decode()
    try:
        out = run_in(
            docker_client,
            probe_image,
            flooder,
            f"cat > /tmp/flood.pl <<'EOF'\n{FLOOD}\nEOF\n"
            f"perl /tmp/flood.pl {host} {port} {auth} 12000; "
            f"curl -s -m 20 -o /dev/null -w 'still %{{http_code}}\\n' {registry_url()}",
        )
        code, size = proxy.container.exec_run(["stat", "-c", "%s", "/run/trimo/flooder/p/log"])
        assert code == 0, size
        assert "refused 12000" in out, out
        assert "still 200" in out, out
        assert int(size) <= LOG_BYTES
        nxt = proxy.attach("next", [registry_host()])
        try:
            answered = run_in(
                docker_client,
                probe_image,
                nxt,
                f"curl -s -m 20 -o /dev/null -w '%{{http_code}}' {registry_url()}",
            )
        finally:
            nxt.release()
        assert answered.strip() == "200"
    finally:
        blocked = flooder.release()
    assert len(blocked) == 50 and all(h.startswith("refused-") for h in blocked)


def test_no_tenant_network_has_ipv6(
    docker_client: docker.DockerClient, probe_image: str, proxy: EgressProxy, runner_id: str
) -> None:
    for attachment in (
        proxy.attach("v6", []),
        attach(docker_client, "bridge", "v6b", [], runner_id),
    ):
        try:
            out = run_in(docker_client, probe_image, attachment, "cat /proc/net/if_inet6; echo end")
            assert docker_client.networks.get(attachment.network).attrs["EnableIPv6"] is False
        finally:
            attachment.release()
        assert out.strip() == "end", out


# -- the pure parts ----------------------------------------------------------------------


def test_the_host_rules_hold_only_for_the_runners_own_bridges() -> None:
    rules = firewall.ruleset("runner-1", ["10.255.255.53"])
    prefix = firewall.interface_prefix("runner-1")
    assert len(prefix) == 7 and prefix != firewall.interface_prefix("runner-2")
    assert rules.startswith(f"table inet {firewall.table_name('runner-1')}\ndelete table")
    assert f'iifname "{prefix}*" drop' in rules  # nothing new reaches the host
    assert "10.255.255.53 } meta l4proto { tcp, udp } th dport 53 accept" in rules
    assert "169.254.0.0/16" in rules and "meta nfproto ipv6 drop" in rules
    assert firewall.fingerprint(rules) == firewall.fingerprint(
        firewall.ruleset("runner-1", ["10.255.255.53"])
    )
    assert firewall.fingerprint(rules) != firewall.fingerprint(firewall.ruleset("runner-1", []))


def test_resolvers_are_read_as_docker_uses_them(tmp_path: Path) -> None:
    first, second = tmp_path / "resolv.conf", tmp_path / "systemd.conf"
    first.write_text("# x\nnameserver 127.0.0.53\noptions edns0\n")
    second.write_text("nameserver 10.0.0.2\nnameserver fd00::1\nnameserver 10.0.0.2\nbad\n")
    assert firewall.resolvers([first, second]) == ["10.0.0.2"]
    first.write_text("nameserver 192.0.2.53\n")
    assert firewall.resolvers([first, second]) == ["192.0.2.53"]
    assert firewall.resolvers([tmp_path / "missing"]) == []


def test_subnets_come_from_the_pool_clear_of_the_hosts_routes(tmp_path: Path) -> None:
    within = ipaddress.IPv4Network("172.31.0.0/26")
    taken = [ipaddress.IPv4Network("172.31.0.0/27"), ipaddress.IPv4Network("10.0.0.0/8")]
    picked = {tenant.pick_subnet(within, taken) for _ in range(40)}
    assert picked == {
        ipaddress.IPv4Network("172.31.0.32/28"),
        ipaddress.IPv4Network("172.31.0.48/28"),
    }
    assert tenant.pick_subnet(within, [ipaddress.IPv4Network("172.31.0.0/16")]) is None
    routes = tmp_path / "route"
    routes.write_text(
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n"
        "eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
        "docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n"
    )
    assert tenant.host_routes(routes) == [ipaddress.IPv4Network("172.17.0.0/16")]
    assert tenant.pool({}) == ipaddress.IPv4Network(tenant.DEFAULT_POOL)
    assert tenant.pool({tenant.POOL_ENV: "10.99.0.0/20"}) == ipaddress.IPv4Network("10.99.0.0/20")
    for bad in ("nonsense", "10.0.0.0/30", "fd00::/64"):
        with pytest.raises(TrimoError):
            tenant.pool({tenant.POOL_ENV: bad})


def test_doctor_checks_the_host_rules(docker_client: docker.DockerClient, runner_id: str) -> None:
    assert "not in place" in (host_rules_problem(docker_client, runner_id) or "")
    firewall.install(docker_client, runner_id)
    assert host_rules_problem(docker_client, runner_id) is None
    firewall.install(docker_client, runner_id, ["192.0.2.99"])  # the host's resolvers moved
    assert "outdated" in (host_rules_problem(docker_client, runner_id) or "")
    firewall.remove(docker_client, runner_id)
    assert "not in place" in (host_rules_problem(docker_client, runner_id) or "")
