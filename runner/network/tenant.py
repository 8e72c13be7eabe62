"""A network of its own for each run and preview: a Docker bridge on a small subnet.

    network = create(client, runner_id, internal=True, labels={...})
    ... the tenant's container (and, for `allowlist`, the egress proxy) on network.name ...
    remove(network)

Its bridge is named with the runner's prefix, so the runner's host rules
(runner.network.firewall, installed before the first network) hold for it: no way to the
host, to another network or to a private address. Its name says nothing of the work on it
(Docker's DNS answers with it). IPv6 is off. Subnets are /28s taken from
`TRIMO_NETWORK_POOL` (172.31.0.0/16 unless set) clear of this host's routes, so that many
tenants never exhaust Docker's own address pools.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path

import docker
import docker.errors
import docker.types
from docker.models.networks import Network

from runner.container import LABEL_RUNNER
from runner.errors import TrimoError
from runner.network import firewall

POOL_ENV = "TRIMO_NETWORK_POOL"
DEFAULT_POOL = "172.31.0.0/16"
SUBNET_PREFIX = 28
LABEL_TENANT = "dev.trimo.tenant"
BRIDGE_NAME = "com.docker.network.bridge.name"
ROUTES = Path("/proc/net/route")
TRIES = 8


def pool(environ: Mapping[str, str] = os.environ) -> ipaddress.IPv4Network:
    """The range tenant subnets come from; TrimoError when `TRIMO_NETWORK_POOL` is not one."""
    text = environ.get(POOL_ENV, "").strip() or DEFAULT_POOL
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise TrimoError(f"{POOL_ENV}={text!r} is not an address range.") from exc
    if not isinstance(network, ipaddress.IPv4Network) or network.prefixlen > SUBNET_PREFIX:
        raise TrimoError(
            f"{POOL_ENV}={text!r} is too small or not IPv4",
            f"give an IPv4 range of /{SUBNET_PREFIX} or wider, e.g. {DEFAULT_POOL}",
        )
    return network


def host_routes(path: Path = ROUTES) -> list[ipaddress.IPv4Network]:
    """This host's IPv4 routes other than the default one (Docker's bridges among them)."""
    found: list[ipaddress.IPv4Network] = []
    try:
        lines = path.read_text().splitlines()[1:]
    except OSError:
        return found
    for line in lines:
        fields = line.split()
        if len(fields) < 8:
            continue
        destination, mask = (int(fields[1], 16), int(fields[7], 16))
        if mask == 0:
            continue
        address = ipaddress.IPv4Address(destination.to_bytes(4, "little"))
        prefix = bin(mask).count("1")
        found.append(ipaddress.IPv4Network(f"{address}/{prefix}", strict=False))
    return found


def pick_subnet(
    within: ipaddress.IPv4Network, taken: Iterable[ipaddress.IPv4Network]
) -> ipaddress.IPv4Network | None:
    """A random /28 of `within` that overlaps none of `taken` (pure but for the dice)."""
    taken = [net for net in taken if net.overlaps(within)]
    count = 2 ** (SUBNET_PREFIX - within.prefixlen)
    for _ in range(64):
        index = secrets.randbelow(count)
        start = int(within.network_address) + index * 2 ** (32 - SUBNET_PREFIX)
        subnet = ipaddress.IPv4Network((start, SUBNET_PREFIX))
        if not any(subnet.overlaps(net) for net in taken):
            return subnet
    return None


def create(
    client: docker.DockerClient,
    runner_id: str,
    internal: bool,
    labels: Mapping[str, str] | None = None,
) -> Network:
    """A new network for one tenant: no way out when `internal`, else to public addresses."""
    firewall.ensure(client, runner_id)
    return make(
        client,
        f"trimo-net-{secrets.token_hex(6)}",
        internal,
        {LABEL_RUNNER: runner_id, LABEL_TENANT: "1", **(labels or {})},
        {BRIDGE_NAME: firewall.interface_prefix(runner_id) + secrets.token_hex(4)},
    )


def make(
    client: docker.DockerClient,
    name: str,
    internal: bool,
    labels: Mapping[str, str],
    options: Mapping[str, str] | None = None,
) -> Network:
    """A bridge network `name` on a free /28 of the pool (Docker's own pools when the pool is
    full); IPv6 off."""
    within = pool()
    for _ in range(TRIES):
        subnet = pick_subnet(within, host_routes())
        ipam = None
        if subnet is not None:
            ipam = docker.types.IPAMConfig(
                pool_configs=[docker.types.IPAMPool(subnet=str(subnet), gateway=str(subnet[1]))]
            )
        try:
            network: Network = client.networks.create(
                name,
                driver="bridge",
                internal=internal,
                enable_ipv6=False,
                ipam=ipam,
                options=dict(options or {}),
                labels=dict(labels),
                check_duplicate=True,
            )
            return network
        except docker.errors.APIError as exc:
            if "overlap" not in str(exc).lower():
                raise TrimoError(f"Docker could not make a network: {exc.explanation}") from exc
    raise TrimoError(
        f"No free subnet for a new network in {within}.",
        f"set {POOL_ENV} to a free IPv4 range (a /16 takes 4,096 networks)",
    )


def remove(network: Network) -> None:
    """Remove `network` (its containers must be gone or disconnected); never raises."""
    with contextlib.suppress(docker.errors.APIError):
        network.remove()
