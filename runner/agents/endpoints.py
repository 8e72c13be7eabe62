"""The operator's own model endpoints: a gateway or proxy in front of an agent's API. Pure.

`TRIMO_ANTHROPIC_BASE_URL` is given to the agents that call Anthropic's API as
ANTHROPIC_BASE_URL; `TRIMO_CODEX_CONFIG_FILE` is a Codex `config.toml` whose model
providers (`[model_providers.<id>] base_url = …`) say where Codex calls. Their hosts join
a run's allowlist, and being the operator's own (not a repository's) they may be private
addresses: a gateway inside the company's network.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from runner.errors import TrimoError

ANTHROPIC_BASE_URL = "ANTHROPIC_BASE_URL"
ANTHROPIC_KEY_ENV = "ANTHROPIC_API_KEY"
"""Agents that read this key call Anthropic's API: they are given the operator's base URL."""
CODEX_KEY_ENV = ("OPENAI_API_KEY", "CODEX_API_KEY")
"""What a Codex provider's `env_key` may name: the variables a Codex run is given."""
_SECRET_KEY = re.compile(r"token|secret|password|api[_-]?key|authorization|bearer", re.I)


@dataclass(frozen=True)
class Endpoint:
    """Where an agent calls: a host name or an address, and a port."""

    host: str
    port: int

    @property
    def is_address(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def endpoint_of(url: str, what: str) -> Endpoint:
    """The host and port of an http(s) base URL; TrimoError naming `what` when it is not one."""
    parts = urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:
        port = -1
    host = (parts.hostname or "").rstrip(".")
    if parts.scheme not in ("http", "https") or not host or port == -1:
        raise TrimoError(
            f"{what} {url!r} is not an http(s) URL with a host",
            "give a base URL like https://llm-gateway.example.com",
        )
    if host == "localhost" or _loopback(host):
        raise TrimoError(
            f"{what} {url!r} is this machine's loopback: inside a sandbox it is the sandbox's own",
            "give an address or name the runner's containers reach (the host's LAN address)",
        )
    return Endpoint(host, port or (443 if parts.scheme == "https" else 80))


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class CodexConfig:
    """A Codex config.toml as the operator gave it, and what Trimo read in it."""

    text: str
    endpoints: list[Endpoint]
    """Where its model providers call."""
    secrets: list[str]
    """Values to scrub from everything a run's output carries (tokens, headers)."""
    key_env: dict[str, str]
    """Each provider's `env_key`, by provider id."""


def read_codex_config(text: str, source: str) -> CodexConfig:
    """The providers' endpoints in a Codex config.toml; TrimoError when it cannot be used."""
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TrimoError(
            f"The Codex config {source} is not valid TOML: {exc}", "check it with `codex`"
        ) from exc
    providers = config.get("model_providers", {})
    if not isinstance(providers, dict):
        raise TrimoError(f"The Codex config {source}: model_providers is not a table")
    endpoints: list[Endpoint] = []
    key_env: dict[str, str] = {}
    for name, provider in providers.items():
        if not isinstance(provider, dict):
            raise TrimoError(f"The Codex config {source}: model_providers.{name} is not a table")
        url = provider.get("base_url")
        if url is not None:
            what = f"The Codex config {source}: model_providers.{name}.base_url"
            if not isinstance(url, str):
                raise TrimoError(f"{what} is not a string")
            if (endpoint := endpoint_of(url, what)) not in endpoints:
                endpoints.append(endpoint)
        if isinstance(env := provider.get("env_key"), str):
            key_env[name] = env
    return CodexConfig(text, endpoints, sorted(set(_secret_values(config))), key_env)


def _secret_values(value: Any, secret: bool = False) -> Iterator[str]:
    """Strings under keys that name a credential, and every header value."""
    if isinstance(value, str):
        if secret and len(value) >= 8:
            yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            named = key != "env_key" and bool(_SECRET_KEY.search(key))
            yield from _secret_values(item, secret or named or key == "http_headers")
    elif isinstance(value, list):
        for item in value:
            yield from _secret_values(item, secret)
