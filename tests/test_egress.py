"""The `allowlist` network with real Docker: the egress proxy lets through allowed names only.

The outside host is the package registry this machine is configured to reach
(tests/outside.py); no proxy variable is set on this machine, so the proxy's own
way out is the one every container has.
"""

from __future__ import annotations

import base64
import io
import ipaddress
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
from docker.models.containers import Container

from runner import leftovers
from runner.agents.endpoints import Endpoint
from runner.errors import TrimoError
from runner.job import Outcome, RepoRef, RunRequest
from runner.network import EgressProxy, NetworkAttachment, attach, direct
from runner.network.egress import blocked_hosts, parse_upstream, tinyproxy_config
from runner.network.proxyimage import PROXY_IMAGE, ensure_image
from runner.policy import RunnerPolicy, refusal
from tests.conftest import build_lock, free_port, side_by_side
from tests.engine_helpers import make_request, run
from tests.loop_harness import Loop
from tests.outside import registry_host, registry_url, suffix_of

CLIENT_IMAGE = "trimo-test-netclient:on"
CLIENT_DOCKERFILE = """
FROM {base}
USER root
RUN apt-get update && apt-get install -y --no-install-recommends curl \\
 && rm -rf /var/lib/apt/lists/*
USER agent
"""
REGISTRY_ADDRESS = "203.0.113.80"  # what the registries resolve to on these machines


def netclient_image(docker_client: docker.DockerClient, base: str) -> str:
    """`base` (which trusts this machine's CAs) plus curl, built once per base image."""
    base_id = docker_client.images.get(base).id.split(":")[-1][:12]
    tag = f"{CLIENT_IMAGE}-{base_id}"
    with build_lock(tag):
        try:
            docker_client.images.get(tag)
        except docker.errors.ImageNotFound:
            dockerfile = io.BytesIO(CLIENT_DOCKERFILE.format(base=base).encode())
            docker_client.images.build(fileobj=dockerfile, tag=tag, rm=True)
    return tag


@pytest.fixture(scope="module")
def client_image(docker_client: docker.DockerClient, test_image: str) -> str:
    return netclient_image(docker_client, test_image)


@pytest.fixture(scope="module")
def proxy(docker_client: docker.DockerClient) -> Iterator[EgressProxy]:
    ensure_image(docker_client)
    started = EgressProxy.ensure(docker_client, f"test-{secrets.token_hex(4)}")
    yield started
    leftovers.close(docker_client, started.runner_id)


def run_in(
    client: docker.DockerClient, image: str, attachment: NetworkAttachment, script: str
) -> str:
    """Run `script` as the agent would: its user, its network, its proxy variables."""
    container = client.containers.run(
        image,
        ["bash", "-c", script],
        detach=True,
        user="1000:1000",
        network_mode=attachment.network,
        environment=attachment.env,
        dns=attachment.dns,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
    )
    try:
        container.wait(timeout=60)
        return str(container.logs().decode())
    finally:
        container.remove(force=True)


def status(url: str, *extra: str) -> str:
    """A shell line printing `<url> <HTTP status>` (000 when no answer came)."""
    flags = " ".join(extra)
    return f"echo {url} $(curl -s -m 20 -o /dev/null -w '%{{http_code}}' {flags} {url})"


INTERNAL_SERVICE = (
    '$SIG{PIPE} = "IGNORE";'
    "$s = IO::Socket::INET->new(LocalPort => 8080, Listen => 16, ReuseAddr => 1) or die $!;"
    "while ($c = $s->accept) {"
    # the whole request head first: closing on unread bytes resets the connection, and a
    # proxy still writing its headers then answers 503
    "  while (defined($l = <$c>) && $l !~ /^\\r?$/) {}"
    '  print $c "HTTP/1.0 200 OK\\r\\n\\r\\nsecret"; close $c'
    "}"
)


def internal_service(
    client: docker.DockerClient, image: str, network: str, name: str
) -> docker.models.containers.Container:
    """A web server answering 200 on port 8080 of a private address, as `name` on
    `network`, standing in for a service inside the company's network."""
    server = client.containers.run(
        image, ["perl", "-MIO::Socket::INET", "-e", INTERNAL_SERVICE], detach=True
    )
    client.networks.get(network).connect(server, aliases=[name])
    deadline = time.monotonic() + 30
    while server.exec_run(["bash", "-c", "echo > /dev/tcp/127.0.0.1/8080"])[0] != 0:
        assert time.monotonic() < deadline, server.logs().decode(errors="replace")
        time.sleep(0.05)
    return server


def test_an_allowed_host_is_reached_over_https_and_tls_is_not_intercepted(
    docker_client: docker.DockerClient, client_image: str, proxy: EgressProxy
) -> None:
    attachment = proxy.attach("allowed", [registry_host()])
    out = run_in(
        docker_client,
        client_image,
        attachment,
        status(registry_url())
        + f"; curl -s -m 20 -o /dev/null -w '%{{http_connect}}\\n' {registry_url()}",
    )
    assert attachment.release() == {}
    lines = out.split("\n")
    assert lines[0] == f"{registry_url()} 200", out
    assert lines[1] == "200"  # the proxy answered CONNECT: the TLS session is the client's own


def test_a_suffix_allows_deeper_names_only(
    docker_client: docker.DockerClient, client_image: str, proxy: EgressProxy
) -> None:
    parent = suffix_of(registry_host())
    attachment = proxy.attach("suffix", [f"*.{parent}"])
    out = run_in(
        docker_client,
        client_image,
        attachment,
        status(registry_url()) + "; " + status(f"https://{parent}/"),
    )
    assert out.split("\n")[:2] == [f"{registry_url()} 200", f"https://{parent}/ 000"]
    assert attachment.release() == {parent: 1}


def test_a_host_not_on_the_list_is_refused_and_reported_with_counts(
    docker_client: docker.DockerClient, client_image: str, proxy: EgressProxy
) -> None:
    allowed = registry_host()
    attachment = proxy.attach("refused", [f"not-{allowed}"])
    out = run_in(
        docker_client,
        client_image,
        attachment,
        "; ".join(
            [
                status("https://example.org/"),
                status("https://example.org/again"),
                status("http://example.org/"),
                status(registry_url()),
                "curl -s -m 20 -o /dev/null -w '%{http_connect}\\n' https://example.org/",
            ]
        ),
    )
    lines = out.split("\n")
    assert lines[:4] == [
        "https://example.org/ 000",  # CONNECT refused: curl never got to speak HTTP
        "https://example.org/again 000",
        "http://example.org/ 403",
        f"{registry_url()} 000",
    ], out
    assert lines[4] == "403"
    assert attachment.release() == {"example.org": 4, allowed: 1}
    assert attachment.release() == {"example.org": 4, allowed: 1}  # idempotent


def test_direct_connections_and_dns_fail_inside_the_container(
    docker_client: docker.DockerClient, client_image: str, proxy: EgressProxy
) -> None:
    attachment = proxy.attach("direct", [registry_host()])
    script = side_by_side(  # each waits out its timeout, the lookup 20 s
        f"curl -s -m 5 --noproxy '*' -o /dev/null https://{REGISTRY_ADDRESS}/; echo ip $?",
        f"curl -s -m 5 --noproxy '*' -o /dev/null {registry_url()}; echo name $?",
        f"getent hosts {registry_host()}; echo dns $?",
        "curl -s -m 5 --noproxy '*' -o /dev/null http://169.254.169.254/; echo metadata $?",
    )
    out = run_in(docker_client, client_image, attachment, script)
    attachment.release()
    results = dict(line.split() for line in out.strip().split("\n"))
    assert results["ip"] != "0"
    assert results["name"] in ("6", "28")  # could not resolve the host, or gave up resolving
    assert results["dns"] == "2"  # getent: not found
    assert results["metadata"] != "0"


def test_the_proxy_never_connects_to_private_or_metadata_addresses(
    docker_client: docker.DockerClient, client_image: str, proxy: EgressProxy
) -> None:
    """DNS rebinding: an allowed name that resolves to a private address is refused.

    A web server on the proxy's own outer network under an allowed name stands in for
    an internal service; the proxy resolves the name (to a private address) and refuses.
    """
    name = f"rebind-{secrets.token_hex(3)}.trimo-test.example"
    outward = proxy.outward
    server = internal_service(docker_client, client_image, outward, name)
    try:
        code, resolved = proxy.container.exec_run(["getent", "hosts", name])
        assert code == 0, resolved
        assert ipaddress.ip_address(resolved.decode().split()[0]).is_private, resolved
        attachment = proxy.attach("rebind", [name])
        out = run_in(docker_client, client_image, attachment, status(f"http://{name}:8080/"))
        attachment.release()
        assert out.strip() != f"http://{name}:8080/ 200"
        assert out.strip().endswith((" 500", " 502", " 503", " 000")), out
    finally:
        server.remove(force=True)
    for address, port in (("169.254.169.254", 80), ("10.255.255.53", 53), ("127.0.0.1", 22)):
        # refused at once by the proxy's firewall, not a timeout somewhere else
        said = connect_from(proxy.container, address, port)
        assert "Connection refused" in said and said.endswith("exit 1"), (address, said)
        assert int(said.split(" ms ")[0]) < 2000, (address, said)


def answer(
    container: Container, command: list[str], until: Callable[[str], bool], what: str
) -> str:
    """What `command` prints in `container`, once `until` holds for it (at most 10 s).
    Docker's exec stream has ended before its output (twice in nine full runs beside other
    load), so the command is run again until then."""

    def printed() -> str | None:
        text = bytes(container.exec_run(command)[1]).decode(errors="replace").strip()
        return text if until(text) else None

    return Loop.wait(printed, 10, what)


def read_until(container: Container, path: str, line: str) -> str:
    """The file at `path` in `container`, once it holds `line`."""
    return answer(container, ["cat", path], lambda text: line in text, f"{path} to hold {line!r}")


def connect_from(container: Container, address: str, port: int) -> str:
    """What a TCP connection from `container` to `address:port` came to: "<ms> ms <what bash
    said> exit <code>", timed inside the container (a busy machine's `docker exec` is
    slow)."""
    script = (
        f"start=$(date +%s%N); said=$(timeout 5 bash -c 'echo > /dev/tcp/{address}/{port}' "
        '2>&1); code=$?; echo "$(( ($(date +%s%N) - start) / 1000000 )) ms $said exit $code"'
    )
    return answer(container, ["bash", "-c", script], bool, f"an answer about {address}:{port}")


def test_the_operators_endpoint_is_reached_on_a_private_address_by_its_run_only(
    docker_client: docker.DockerClient, client_image: str, proxy: EgressProxy
) -> None:
    """A gateway the operator named (TRIMO_ANTHROPIC_BASE_URL, a Codex provider) passes
    the proxy on a private address, by address or by name. A repository's host resolving
    to the same address and port never does: not in another run while the operator's run
    goes on, nor in a later run on the same proxy slot."""
    name = f"gateway-{secrets.token_hex(3)}.trimo-test.example"
    server = internal_service(docker_client, client_image, proxy.outward, name)
    try:
        server.reload()
        address = server.attrs["NetworkSettings"]["Networks"][proxy.outward]["IPAddress"]
        assert ipaddress.ip_address(address).is_private, address
        by_address = proxy.attach("operator", [], operator=[Endpoint(address, 8080)])
        repository = proxy.attach("repository", [name])
        both = status(f"http://{address}:8080/") + "; " + status(f"http://{name}:8080/")
        assert run_in(docker_client, client_image, by_address, both).split("\n")[:2] == [
            f"http://{address}:8080/ 200",
            f"http://{name}:8080/ 403",  # not on its allowlist
        ]
        out = run_in(docker_client, client_image, repository, status(f"http://{name}:8080/"))
        assert out.strip().endswith((" 500", " 502", " 503", " 000")), out
        by_address.release()
        repository.release()
        later = proxy.attach("later", [name])  # the first free slot: the operator run's
        out = run_in(docker_client, client_image, later, status(f"http://{name}:8080/"))
        later.release()
        assert out.strip().endswith((" 500", " 502", " 503", " 000")), out
        by_name = proxy.attach("by-name", [], operator=[Endpoint(name, 8080)])
        out = run_in(docker_client, client_image, by_name, status(f"http://{name}:8080/"))
        by_name.release()
        assert out.strip() == f"http://{name}:8080/ 200"
    finally:
        server.remove(force=True)


def test_an_operators_endpoint_that_does_not_resolve_is_a_clear_refusal(
    proxy: EgressProxy,
) -> None:
    """A gateway name the proxy cannot resolve would leave the run's agent without its API
    and nobody told why: its run does not start, and says so."""
    name = f"nowhere-{secrets.token_hex(3)}.trimo-test.example"
    with pytest.raises(TrimoError, match=f"{name} does not resolve"):
        proxy.attach("unresolved", [], operator=[Endpoint(name, 8080)])


def test_a_gateways_port_is_one_the_runs_proxy_tunnels_to() -> None:
    conf = tinyproxy_config("/run/trimo/r/p", "172.31.0.2", "run", "pw", None, [8443, 443])
    ports = [line for line in conf.splitlines() if line.startswith("ConnectPort")]
    assert ports == ["ConnectPort 8443", "ConnectPort 443", "ConnectPort 80"]
    plain = tinyproxy_config("/run/trimo/r/p", "172.31.0.2", "run", "pw", None)
    assert [line for line in plain.splitlines() if line.startswith("ConnectPort")] == [
        "ConnectPort 443",
        "ConnectPort 80",
    ]


def test_runs_never_use_each_others_proxy(
    docker_client: docker.DockerClient, client_image: str, proxy: EgressProxy
) -> None:
    """Another run's proxy is not even reachable (tests/test_tenants.py tries harder)."""
    first = proxy.attach("first", ["first.example.com"])
    second = proxy.attach("second", [registry_host()])
    assert first.network != second.network
    other = (
        first.env["HTTPS_PROXY"].rsplit("@", 1)[0]
        + "@"
        + second.env["HTTPS_PROXY"].rsplit("@", 1)[1]
    )
    stolen = {k: other if k.lower().endswith("_proxy") else v for k, v in first.env.items()}
    stolen["NO_PROXY"] = stolen["no_proxy"] = first.env["NO_PROXY"]
    borrowed = NetworkAttachment(network=first.network, env=stolen, dns=first.dns)
    out = run_in(
        docker_client,
        client_image,
        borrowed,
        f"curl -s -m 10 -o /dev/null -w '%{{http_connect}}' {registry_url()}",
    )
    first.release()
    second.release()
    assert out.strip() == "000"


def test_the_proxy_chains_to_an_upstream_proxy(
    docker_client: docker.DockerClient, client_image: str
) -> None:
    """A second proxy on this host (published on a local port) sees the run's requests."""
    port = free_port()
    conf = 'Port 8888\\nLogFile \\"/tmp/up.log\\"\\nLogLevel Info\\n'
    upstream = docker_client.containers.run(
        PROXY_IMAGE,
        ["-c", f'printf "{conf}" > /tmp/up.conf; exec tinyproxy -d -c /tmp/up.conf'],
        entrypoint=["bash"],
        detach=True,
        ports={"8888/tcp": ("0.0.0.0", port)},
    )
    chained = None
    try:
        deadline = time.monotonic() + 30
        while b"Accepting connections" not in upstream.exec_run(["cat", "/tmp/up.log"])[1]:
            assert time.monotonic() < deadline, upstream.logs().decode(errors="replace")
            time.sleep(0.1)
        chained = EgressProxy.ensure(
            docker_client, f"test-up-{secrets.token_hex(4)}", f"http://127.0.0.1:{port}"
        )
        attachment = chained.attach("chained", [registry_host()])
        out = run_in(
            docker_client,
            client_image,
            attachment,
            status(registry_url()) + "; " + status("https://example.org/"),
        )
        assert attachment.release() == {"example.org": 1}
        assert out.split("\n")[:2] == [f"{registry_url()} 200", "https://example.org/ 000"]
        log = read_until(upstream, "/tmp/up.log", f"CONNECT {registry_host()}:443")
        assert "example.org" not in log  # refused hosts never reach the upstream
    finally:
        upstream.remove(force=True)
        if chained is not None:
            leftovers.close(docker_client, chained.runner_id)


def test_none_has_only_loopback_and_bridge_reaches_outside_hosts(
    docker_client: docker.DockerClient, client_image: str, proxy: EgressProxy
) -> None:
    none = run_in(docker_client, client_image, direct("none"), "ls /sys/class/net")
    assert none.split() == ["lo"]
    bridged = attach(docker_client, "bridge", "b", [], proxy.runner_id)
    assert bridged.env == {} and bridged.network.startswith("trimo-net-")
    try:
        bridge = run_in(
            docker_client,
            client_image,
            bridged,
            "ls /sys/class/net | tr '\\n' ' '; echo; "
            f"getent hosts {registry_host()} >/dev/null; echo dns $?; " + status(registry_url()),
        )
    finally:
        bridged.release()
    lines = bridge.split("\n")
    assert lines[0].split() == ["eth0", "lo"]
    assert lines[1:3] == ["dns 0", f"{registry_url()} 200"]
    with pytest.raises(docker.errors.NotFound):
        docker_client.networks.get(bridged.network)  # released with the run


def test_attach_for_each_mode(docker_client: docker.DockerClient) -> None:
    assert attach(docker_client, "none", "r", [], "x").network == "none"
    with pytest.raises(TrimoError, match="Unknown network mode"):
        attach(docker_client, "host", "r", [], "x")


def test_bad_hosts_are_refused_before_anything_starts(proxy: EgressProxy) -> None:
    with pytest.raises(TrimoError, match="address"):
        proxy.attach("bad", ["169.254.169.254"])
    with pytest.raises(TrimoError, match="too wide"):
        proxy.attach("bad", ["*.com"])


def test_blocked_hosts_are_read_from_tinyproxys_log() -> None:
    log = (
        'NOTICE    Dec 01 14:30:00.123 [7]: Proxying refused on filtered domain "Example.org"\n'
        "CONNECT   Dec 01 14:30:00.124 [7]: Connect (file descriptor 5): 172.18.0.3\n"
        'NOTICE    Dec 01 14:30:01.000 [7]: Proxying refused on filtered domain "example.org"\n'
        'NOTICE    Dec 01 14:30:02.000 [7]: Proxying refused on filtered domain "evil.test"\n'
    )
    assert blocked_hosts(log) == {"example.org": 2, "evil.test": 1}


def test_upstream_urls() -> None:
    up = parse_upstream("http://user:p%40ss@proxy.corp:8080")
    assert (up.host, up.port, up.username, up.password) == ("proxy.corp", 8080, "user", "p@ss")
    assert up.tinyproxy_line == "Upstream http user:p%40ss@proxy.corp:8080"
    assert parse_upstream("proxy.corp").port == 3128
    with pytest.raises(TrimoError, match="http://"):
        parse_upstream("socks5://proxy.corp:1080")


def request(hosts: list[str], network: str = "allowlist") -> RunRequest:
    return RunRequest.model_validate(
        {
            "run_id": "r1",
            "pipeline": "p1",
            "repo": RepoRef(full_name="o/r", clone_url="https://example.invalid/o/r.git"),
            "branch": "trimo/x",
            "base_branch": "main",
            "prompt": "go",
            "network": network,
            "allowed_hosts": hosts,
        }
    )


def test_the_runner_caps_the_hosts_a_job_may_add() -> None:
    policy = RunnerPolicy(allowed_hosts=["*.example.com", "pkgs.example.net"])
    assert refusal(request(["registry.example.com", "pkgs.example.net"]), policy) is None
    assert refusal(request([]), policy) is None
    reason = refusal(request(["evil.example", "*.example.com", "files.pkgs.example.net"]), policy)
    assert reason is not None
    assert (
        "evil.example, files.pkgs.example.net" in reason and "TRIMO_RUNNER_ALLOWED_HOSTS" in reason
    )
    assert refusal(request(["anything.example"]), RunnerPolicy()) is None  # no cap
    assert "address" in (refusal(request(["10.0.0.1"]), RunnerPolicy()) or "")
    # hosts only matter on an allowlist network
    assert refusal(request(["evil.example"], network="none"), policy) is None


def test_allowlist_is_the_default_network() -> None:
    assert request([]).model_copy().network == "allowlist"
    assert RunRequest.model_fields["network"].default == "allowlist"
    assert "allowlist" in RunnerPolicy().allowed_networks


def test_the_check_run_text_for_blocked_hosts() -> None:
    from runner.templating import render

    text = render(
        "github/_blocked_hosts.md.j2",
        blocked=[{"host": "`example.org`", "count": 3}, {"host": "`evil.test`", "count": 1}],
    )
    assert text.strip().split("\n") == [
        "- blocked: `example.org` ×3 — add it to `allowed_hosts` in `.github/trimo.yml`",
        "- blocked: `evil.test` ×1 — add it to `allowed_hosts` in `.github/trimo.yml`",
    ]


def test_an_allowlist_run_through_the_engine_reports_what_was_blocked(
    sample_repo: Path, tmp_path: Path, client_image: str
) -> None:
    script = (
        f"curl -s -m 20 -o /dev/null -w 'allowed %{{http_code}}\\n' {registry_url()}; "
        "curl -s -m 20 -o /dev/null https://example.org/; echo blocked $?; "
        "curl -s -m 20 -o /dev/null https://example.org/; "
        "echo proxy=$HTTPS_PROXY"
    )
    request = make_request(
        sample_repo,
        script,
        image=client_image,
        network="allowlist",
        allowed_hosts=[registry_host()],
    )
    finished, events = run(tmp_path / "cache", request)

    assert finished.outcome is Outcome.SUCCESS, finished.reason
    text = events.text()
    assert "allowed 200" in text and "blocked 56" in text
    [blocked] = events.of_type("egress_blocked")
    assert blocked.model_dump()["hosts"] == {"example.org": 2}
    proxy_line = next(line for line in text.splitlines() if line.startswith("proxy="))
    assert "***" in proxy_line, "the run's proxy password reached its events"


def test_a_request_for_the_proxy_itself_is_authenticated_and_filtered(
    docker_client: docker.DockerClient, client_image: str, proxy: EgressProxy
) -> None:
    """tinyproxy takes a request with a bare path as a transparent one, its host from the
    `Host` header (CVE-2026-55202): without the password it is refused, with it the host
    is still filtered."""
    attachment = proxy.attach("transparent", [registry_host()])
    url = attachment.env["HTTPS_PROXY"]
    credentials = base64.b64encode(url.split("//", 1)[1].rsplit("@", 1)[0].encode()).decode()
    direct_url = "http://" + url.rsplit("@", 1)[1] + "/"
    ask = "curl -s -m 10 --noproxy '*' -o /dev/null -w '%{http_code}\\n' -H 'Host: example.org'"
    out = run_in(
        docker_client,
        client_image,
        attachment,
        f"{ask} {direct_url}; {ask} -H 'Proxy-Authorization: Basic {credentials}' {direct_url}",
    )
    attachment.release()
    assert out.split() == ["407", "403"], out
