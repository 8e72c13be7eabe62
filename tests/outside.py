"""A host outside this machine that tests may reach, read from its npm or pip configuration at
run time, so that no file names a real registry. A test that needs one fails without it."""

from __future__ import annotations

from functools import cache
from urllib.parse import urlsplit

import pytest

from runner.images import registry_build_args


@cache
def registry_url() -> str:
    """The root URL of a package registry this machine is configured to reach."""
    for url in registry_build_args().values():
        if urlsplit(url).hostname:
            return url.rstrip("/") + "/"
    pytest.fail("no package registry in this machine's npm or pip configuration")


def registry_host() -> str:
    host = urlsplit(registry_url()).hostname
    assert host is not None
    return host


def suffix_of(host: str) -> str:
    """`registry.example.com` -> `example.com`: the name a `*.` pattern of it does not match."""
    labels = host.split(".")
    if len(labels) < 3:
        pytest.fail(f"{host} has no parent name of two labels to build a `*.` pattern from")
    return ".".join(labels[1:])
