"""Starting and stopping a run's proxy never asks DNS: its firewall rules are listed by number.

Every run's start and stop lists the proxy's rules. Listed by name, each rule's address was
looked up in reverse through Docker's resolver; where nothing outside answers (these
machines, a runner behind a firewall) each lookup waited its timeout, and runs started
seconds apart, in steps of five (issue 21: eight at once waited up to 16 s for their
proxies). Here the proxy container's resolver is a listener of the test's own that counts
the questions it is asked and answers each at once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import docker
import pytest

from runner import leftovers
from runner.network import EgressProxy
from runner.network.proxyimage import ensure_image
from tests.conftest import unique

RESOLVER = "127.0.0.53"
ASKED = "/tmp/dns-asked"
# Answers every question "no such name" at once (the question, its QR bit and NXDOMAIN
# set) and writes a line per question to ASKED.
LISTENER = rf"""
use IO::Socket::INET;
my $s = IO::Socket::INET->new(LocalAddr => "{RESOLVER}:53", Proto => "udp") or die $!;
while (1) {{
  my $from = $s->recv(my $q, 512);
  next if length($q) < 12;
  open(my $f, ">>", "{ASKED}"); print $f "asked\n"; close($f);
  substr($q, 2, 1) = chr(ord(substr($q, 2, 1)) | 0x80);
  substr($q, 3, 1) = chr((ord(substr($q, 3, 1)) & 0xF0) | 3);
  $s->send($q, 0, $from);
}}
"""


@pytest.fixture
def proxy(docker_client: docker.DockerClient) -> Iterator[EgressProxy]:
    ensure_image(docker_client)
    started = EgressProxy.ensure(docker_client, unique(f"dns-{uuid.uuid4().hex[:6]}"))
    yield started
    leftovers.close(docker_client, started.runner_id)


def asked(proxy: EgressProxy) -> int:
    _code, output = proxy.container.exec_run(["sh", "-c", f"cat {ASKED} 2>/dev/null || true"])
    return bytes(output).decode().count("asked")


def test_a_runs_proxy_starts_and_stops_without_asking_dns(proxy: EgressProxy) -> None:
    container = proxy.container
    container.exec_run(["perl", "-e", LISTENER], detach=True)
    code, output = container.exec_run(
        ["sh", "-c", f"echo 'nameserver {RESOLVER}' > /etc/resolv.conf"]
    )
    assert code == 0, output
    deadline = time.monotonic() + 60
    while asked(proxy) == 0:  # the listener answers
        assert time.monotonic() < deadline, "the test's resolver never answered"
        container.exec_run(["getent", "hosts", "listener-up.example.com"])
    container.exec_run(["sh", "-c", f": > {ASKED}"])

    for number in range(2):  # the second takes the first's slot, whose rules are looked for
        attachment = proxy.attach(f"dns-{number}-{uuid.uuid4().hex[:6]}", ["example.com"])
        attachment.release()

    assert asked(proxy) == 0
