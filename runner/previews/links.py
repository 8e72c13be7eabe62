"""Where a runner's previews are reached: `TRIMO_RUNNER_PREVIEW_URL`, in one of two modes.

- Host mode, recommended: `https://*.previews.example.com` puts each preview at
  `https://<token>.previews.example.com/`, an origin of its own. Previews never share
  cookies, storage or service workers with each other or with the dashboard.
- Path mode: `https://previews.example.com` puts every preview at `/p/<token>/` on one
  host; a cookie says which preview a browser opened last, so all of them share one origin.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_TOKEN = re.compile(r"[a-z0-9]{16,63}")


@dataclass(frozen=True)
class Links:
    scheme: str
    host: str
    """The host name (path mode), or the suffix after `*.` (host mode), lower case."""
    port: int | None
    per_host: bool

    @classmethod
    def parse(cls, url: str) -> Links:
        """Raises ValueError with what is wrong."""
        parts = urlsplit(url.strip().rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("should be an http:// or https:// URL")
        if parts.path or parts.query or parts.fragment or "@" in parts.netloc:
            raise ValueError("should be a scheme and a host only, with no path")
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"not a port in {url}") from exc
        host = (parts.hostname or "").lower()
        if ":" in host:  # an IPv6 address: path mode only
            ipaddress.IPv6Address(host)
            return cls(parts.scheme, f"[{host}]", port, per_host=False)
        per_host = host.startswith("*.")
        name = host.removeprefix("*.")
        labels = name.split(".")
        if "*" in name or not all(_NAME.fullmatch(label) for label in labels):
            raise ValueError("a host per preview reads https://*.previews.example.com")
        return cls(parts.scheme, name, port or None, per_host)

    @property
    def secure(self) -> bool:
        return self.scheme == "https"

    @property
    def _port(self) -> str:
        return f":{self.port}" if self.port else ""

    def url(self, token: str) -> str:
        """The link that opens the preview `token`."""
        if self.per_host:
            return f"{self.scheme}://{token}.{self.host}{self._port}/"
        return f"{self.scheme}://{self.host}{self._port}/p/{token}/"

    def token_of(self, host_header: str | None) -> str | None:
        """In host mode, the token a request's `Host` names; None for any other host."""
        if not self.per_host or not host_header:
            return None
        name = host_header.strip().lower().rsplit(":", 1)[0] if "]" not in host_header else ""
        token, dot, rest = name.partition(".")
        if not dot or rest != self.host or not _TOKEN.fullmatch(token):
            return None
        return token

    def __str__(self) -> str:
        return f"{self.scheme}://{'*.' if self.per_host else ''}{self.host}{self._port}"
