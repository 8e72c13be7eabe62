"""This runner's host rules: no packet from a tenant's network reaches the host, another
network, or a private, loopback, link-local or metadata address.

Every run and preview network of a runner has a bridge whose name starts with the runner's
prefix (`interface_prefix`). One nftables table per runner, `inet trimo-<key>`, holds for all
of them, whatever else the host's firewall says: its chains hook `input` and `forward`
before the usual filter chains and only ever drop, and a drop in any table is final.

- input: nothing new from a tenant network reaches the host (its gateway address, docker0,
  any other address of the host, over any protocol); answers to the host's own connections
  (the preview proxy reaching a preview) pass.
- forward: IPv6 never passes. Within its own bridge a tenant reaches its egress proxy (the
  egress container guards itself, sandbox/proxy/trimo-egress). Routed elsewhere, nothing
  private is reached (other tenants, other Docker networks, the LAN, metadata), except
  DNS to this host's resolvers, which Docker's resolver asks from the container's side.
  Nothing from outside its bridge starts a connection to a tenant.

The table is installed from a short-lived container on the host's network (the egress
image, with NET_ADMIN only), so it needs nothing on the host but Docker.
"""

from __future__ import annotations

import hashlib
import ipaddress
import threading
from collections.abc import Iterable
from pathlib import Path

import docker
import docker.errors

from runner.errors import TrimoError
from runner.network.proxyimage import PROXY_IMAGE, ensure_image

PRIVATE_V4 = (
    "0.0.0.0/8, 10.0.0.0/8, 100.64.0.0/10, 127.0.0.0/8, 169.254.0.0/16, 172.16.0.0/12, "
    "192.0.0.0/24, 192.168.0.0/16, 198.18.0.0/15, 224.0.0.0/4, 240.0.0.0/4"
)
RESOLV_CONF = (Path("/etc/resolv.conf"), Path("/run/systemd/resolve/resolv.conf"))


def runner_key(runner_id: str) -> str:
    return hashlib.sha256(runner_id.encode()).hexdigest()[:6]


def interface_prefix(runner_id: str) -> str:
    """The start of every tenant bridge's name of `runner_id` (8 more characters follow)."""
    return f"t{runner_key(runner_id)}"


def table_name(runner_id: str) -> str:
    return f"trimo-{runner_key(runner_id)}"


def resolvers(files: Iterable[Path] = RESOLV_CONF) -> list[str]:
    """The IPv4 name servers Docker forwards containers' questions to (loopback ones are
    replaced by Docker, so they are left out)."""
    found: list[str] = []
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            parts = line.split()
            if len(parts) < 2 or parts[0] != "nameserver":
                continue
            try:
                address = ipaddress.ip_address(parts[1])
            except ValueError:
                continue
            if address.version == 4 and not address.is_loopback and str(address) not in found:
                found.append(str(address))
        if found:
            break
    return found


def ruleset(runner_id: str, name_servers: Iterable[str]) -> str:
    """The nftables table for `runner_id` (pure): replaces any earlier one atomically."""
    table = table_name(runner_id)
    tenant = f'iifname "{interface_prefix(runner_id)}*"'
    into = f'oifname "{interface_prefix(runner_id)}*"'
    servers = ", ".join(name_servers)
    dns = (
        [f"{tenant} ip daddr {{ {servers} }} meta l4proto {{ tcp, udp }} th dport 53 accept"]
        if servers
        else []
    )
    body = [
        "  chain input {",
        "    type filter hook input priority -10; policy accept;",
        f"    {tenant} ct state established,related accept",
        *(f"    {line}" for line in dns),
        f"    {tenant} drop",
        "  }",
        "  chain forward {",
        "    type filter hook forward priority -10; policy accept;",
        f"    {tenant} meta nfproto ipv6 drop",
        f"    {into} meta nfproto ipv6 drop",
        f"    {tenant} fib daddr . iif oif exists accept",
        *(f"    {line}" for line in dns),
        f"    {tenant} ip daddr {{ {PRIVATE_V4} }} drop",
        f"    {into} ct state new drop",
        "  }",
    ]
    fingerprint = hashlib.sha256("\n".join(body).encode()).hexdigest()[:12]
    return "\n".join(
        [
            f"table inet {table}",
            f"delete table inet {table}",
            f"table inet {table} {{",
            f'  comment "trimo {fingerprint}"',
            *body,
            "}",
        ]
    )


def fingerprint(rules: str) -> str:
    """The hash in a ruleset's (or a listed table's) comment."""
    return rules.split('comment "trimo ', 1)[-1].split('"', 1)[0]


def _nft(client: docker.DockerClient, script: str, rules: str = "") -> str:
    """Run `script` (bash, with the rules in $TRIMO_RULES) in the host's network namespace."""
    ensure_image(client)
    try:
        output = client.containers.run(
            PROXY_IMAGE,
            ["-c", script],
            entrypoint=["bash"],
            environment={"TRIMO_RULES": rules},
            network_mode="host",
            cap_drop=["ALL"],
            cap_add=["NET_ADMIN"],
            security_opt=["no-new-privileges"],
            remove=True,
            stderr=True,
        )
    except docker.errors.ContainerError as exc:
        stderr = exc.stderr.decode(errors="replace").strip() if exc.stderr else ""
        raise TrimoError(f"The host rules could not be changed: {stderr[-400:]}") from exc
    except docker.errors.APIError as exc:
        raise TrimoError(f"The host rules could not be changed: {exc.explanation}") from exc
    return bytes(output).decode(errors="replace")


class _Installed:
    """The tables this process has put in place, so that each is installed once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done: set[tuple[int, str]] = set()

    def ensure(self, client: docker.DockerClient, runner_id: str) -> None:
        with self._lock:
            if (id(client), runner_id) not in self._done:
                install(client, runner_id)
                self._done.add((id(client), runner_id))

    def here(self, runner_id: str) -> bool:
        with self._lock:
            return any(done[1] == runner_id for done in self._done)

    def forget(self, runner_id: str) -> None:
        with self._lock:
            self._done = {done for done in self._done if done[1] != runner_id}


_installed = _Installed()


def ensure(client: docker.DockerClient, runner_id: str) -> None:
    """Install this runner's table unless this process already did."""
    _installed.ensure(client, runner_id)


def installed_here(runner_id: str) -> bool:
    """Whether this process put `runner_id`'s table in place."""
    return _installed.here(runner_id)


def install(
    client: docker.DockerClient, runner_id: str, name_servers: Iterable[str] | None = None
) -> None:
    """Put this runner's table in place (replacing any earlier one, atomically), for this
    host's resolvers unless `name_servers` are given."""
    servers = resolvers() if name_servers is None else name_servers
    _nft(client, 'printf "%s\\n" "$TRIMO_RULES" | nft -f -', ruleset(runner_id, servers))


def remove(client: docker.DockerClient, runner_id: str) -> None:
    """Take this runner's table away (its networks should be gone first)."""
    _installed.forget(runner_id)
    table = table_name(runner_id)
    _nft(client, f"! nft list table inet {table} >/dev/null 2>&1 || nft delete table inet {table}")


def problem(client: docker.DockerClient, runner_id: str) -> str | None:
    """What is wrong with this runner's table on this host, or None when it is in place."""
    table = table_name(runner_id)
    listed = _nft(client, f"nft list table inet {table} 2>/dev/null || true")
    wanted = fingerprint(ruleset(runner_id, resolvers()))
    if not listed.strip():
        return f"the host rules of this runner (nftables table inet {table}) are not in place"
    if f"trimo {wanted}" not in listed:
        return f"the host rules of this runner (nftables table inet {table}) are outdated"
    return None
