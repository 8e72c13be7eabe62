"""Allowed host names: exact names and `*.suffix`, checked, normalised and matched. Pure.

A pattern is a DNS name (`api.anthropic.com`) or `*.` and a suffix of at least
two labels (`*.example.com`, which matches `registry.example.com` and deeper names,
not `example.com` itself). Addresses are refused: the allowlist is by name, and
the egress proxy resolves names itself.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Annotated, Final

from pydantic import AfterValidator

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def host_pattern_error(value: str) -> str | None:
    """Why `value` is not an allowed-host pattern, or None when it is one."""
    text = value.strip().lower().rstrip(".")
    if not text:
        return "an empty host name"
    name = text.removeprefix("*.")
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        pass
    else:
        return f"{value!r} is an address: allow host names, not addresses"
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        return f"{value!r} is not a host name (letters, digits, '-' and '.'; `*.` for a suffix)"
    if text.startswith("*.") and len(labels) < 2:
        return f"{value!r} is too wide: a `*.` suffix needs at least two labels"
    if len(labels) < 2:
        return f"{value!r} is not a full host name"
    return None


def normalise_host(value: str) -> str:
    """The canonical form of a valid pattern (lower case, no trailing dot)."""
    return value.strip().lower().rstrip(".")


def clean_hosts(values: Iterable[str]) -> tuple[list[str], list[str]]:
    """(valid patterns normalised and de-duplicated in order, one error per invalid one)."""
    hosts: list[str] = []
    errors: list[str] = []
    for value in values:
        error = host_pattern_error(value)
        if error is not None:
            errors.append(error)
        elif (host := normalise_host(value)) not in hosts:
            hosts.append(host)
    return hosts, errors


def host_matches(host: str, pattern: str) -> bool:
    """Whether the name `host` is allowed by `pattern` (exact, or `*.suffix` for deeper names)."""
    host, pattern = normalise_host(host), normalise_host(pattern)
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern


def within(pattern: str, caps: Iterable[str]) -> bool:
    """Whether everything `pattern` allows is also allowed by one of `caps`."""
    pattern = normalise_host(pattern)
    for cap in map(normalise_host, caps):
        if cap == pattern:
            return True
        if cap.startswith("*.") and pattern.removeprefix("*.").endswith(cap[1:]):
            return True
    return False


def outside_caps(patterns: Iterable[str], caps: Iterable[str]) -> list[str]:
    """The patterns that `caps` do not cover; none when `caps` is empty (no cap)."""
    caps = list(caps)
    if not caps:
        return []
    return [p for p in patterns if not within(p, caps)]


def tinyproxy_filter(patterns: Iterable[str]) -> str:
    """tinyproxy's filter file (extended regular expressions on the host name) for `patterns`."""
    lines = []
    for pattern in patterns:
        pattern = normalise_host(pattern)
        if pattern.startswith("*."):
            lines.append("\\." + re.escape(pattern[2:]).replace("\\-", "-") + "$")
        else:
            lines.append("^" + re.escape(pattern).replace("\\-", "-") + "$")
    return "\n".join(lines)


MAX_ALLOWED_HOSTS: Final = 100


def _host_pattern(value: str) -> str:
    error = host_pattern_error(value)
    if error is None:
        return normalise_host(value)
    if error.startswith(f"{value!r} "):
        raise ValueError(error.removeprefix(f"{value!r} "))
    raise ValueError("should be a host name like `registry.example.com` or `*.example.com`")


HostPattern = Annotated[str, AfterValidator(_host_pattern)]
"""One entry of `allowed_hosts`: an exact host name or `*.suffix`, normalised."""
