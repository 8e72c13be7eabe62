"""`TRIMO_REDIS_URL` → Redis connections, for the App and the runners alike.

The one place that reads the URL; every arq pool, arq worker and redis-py client is made
from what `parse` returns. Three forms:

- `redis://[[user]:password@]host[:port][/db]`, or `unix:///path/redis.sock?db=N`;
- `rediss://…`: TLS. Query options: `ssl_ca_certs=/path/ca.pem` (the CA that signed the
  server's certificate), `ssl_certfile=` and `ssl_keyfile=` (a client certificate),
  `ssl_cert_reqs=required|optional|none`, `ssl_check_hostname=true|false`;
- `redis+sentinel://[[user]:password@]host[:port][,host[:port]…]/master[/db]`: Redis
  Sentinel. The sentinels (port 26379 unless given) say which server is `master` now; the
  password is the master's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs, quote, unquote, urlsplit, urlunsplit

if TYPE_CHECKING:  # imported where used: settings parse the URL without loading redis and arq
    import redis
    import redis.asyncio as aioredis
    from arq.connections import RedisSettings

DEFAULT_PORT: Final = 6379
SENTINEL_PORT: Final = 26379
CONNECT_TIMEOUT_SECONDS: Final = 10
"""How long arq's pools wait for a new connection (arq's own default is 1 s). A connection
is made when the event loop gets to it: on a busy machine that is often later than 1 s,
even to a Redis on the same host, and a delivery or a report failed with it."""
SCHEMES: Final = ("redis", "rediss", "unix", "redis+sentinel")
TLS_OPTIONS: Final = (
    "ssl_ca_certs",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_cert_reqs",
    "ssl_check_hostname",
)
_CERT_REQS: Final = ("required", "optional", "none")
_TRUE: Final = ("1", "true", "yes", "on")
_FALSE: Final = ("0", "false", "no", "off")
HINT: Final = (
    "use redis://host:6379/0, rediss://host:6380/0?ssl_ca_certs=/path/ca.pem (TLS) or "
    "redis+sentinel://sentinel1:26379,sentinel2:26379/mymaster/0 (Sentinel)"
)


class RedisUrlError(ValueError):
    """TRIMO_REDIS_URL cannot be used; the message says why (never with its password)."""


@dataclass(frozen=True)
class Tls:
    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    cert_reqs: str = "required"
    check_hostname: bool = False


@dataclass(frozen=True)
class RedisTarget:
    """Where Redis is and how to talk to it."""

    hosts: tuple[tuple[str, int], ...] = (("127.0.0.1", DEFAULT_PORT),)
    database: int = 0
    username: str | None = None
    password: str | None = None
    unix_socket_path: str | None = None
    tls: Tls | None = None
    sentinel_master: str | None = None
    """Set for Sentinel: `hosts` are then the sentinels."""

    def display(self) -> str:
        """The target for logs and messages, without its password."""
        if self.sentinel_master is not None:
            sentinels = ",".join(f"{_bracketed(host)}:{port}" for host, port in self.hosts)
            return f"redis+sentinel://{sentinels}/{self.sentinel_master}/{self.database}"
        if self.unix_socket_path is not None:
            return f"unix://{self.unix_socket_path}?db={self.database}"
        host, port = self.hosts[0]
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{_bracketed(host)}:{port}/{self.database}"


def parse(url: str) -> RedisTarget:
    """Read TRIMO_REDIS_URL; raises `RedisUrlError` saying what is wrong."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise RedisUrlError(
            f"TRIMO_REDIS_URL must start with one of {', '.join(s + '://' for s in SCHEMES)}"
            f" (got {scheme + '://' if scheme else 'no scheme'}); {HINT}"
        )
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    tls = _tls(query) if scheme == "rediss" else None
    if tls is None and (given := sorted(set(query) & set(TLS_OPTIONS))):
        raise RedisUrlError(f"TRIMO_REDIS_URL: {', '.join(given)} need rediss:// (TLS)")
    netloc = parts.netloc.rpartition("@")
    username, password = _credentials(netloc[0]) if netloc[1] else (None, None)
    path = [unquote(piece) for piece in parts.path.split("/") if piece]
    common: dict[str, Any] = {"username": username, "password": password, "tls": tls}
    if scheme == "unix":
        if not parts.path:
            raise RedisUrlError("TRIMO_REDIS_URL: unix:// needs the socket's path")
        return RedisTarget(
            hosts=(), database=_db(query.get("db", "0")), unix_socket_path=parts.path, **common
        )
    if scheme == "redis+sentinel":
        if not path:
            raise RedisUrlError(
                "TRIMO_REDIS_URL: a Sentinel URL names the master after the sentinels "
                "(redis+sentinel://host:26379/mymaster/0)"
            )
        return RedisTarget(
            hosts=_hosts(netloc[2], SENTINEL_PORT),
            database=_db(query.get("db") or (path[1] if len(path) > 1 else "0")),
            sentinel_master=path[0],
            **common,
        )
    hosts = _hosts(netloc[2], DEFAULT_PORT)
    if len(hosts) > 1:
        raise RedisUrlError(
            "TRIMO_REDIS_URL names several hosts; for Redis Sentinel use redis+sentinel://"
        )
    return RedisTarget(
        hosts=hosts, database=_db(query.get("db") or (path[0] if path else "0")), **common
    )


def display(url: str) -> str:
    """TRIMO_REDIS_URL for a message or a log line, without its password."""
    try:
        return parse(url).display()
    except RedisUrlError:
        return "(an invalid TRIMO_REDIS_URL)"


def with_password(url: str, password: str) -> str:
    """TRIMO_REDIS_URL with `password` (TRIMO_REDIS_PASSWORD) in it; a URL that has a
    password of its own is refused: which one is right cannot be told."""
    target = parse(url)
    if target.password is not None:
        raise RedisUrlError(
            "TRIMO_REDIS_URL has a password, and TRIMO_REDIS_PASSWORD (or its _FILE) gives "
            "one too: keep one (a URL without its password keeps it out of the environment)"
        )
    parts = urlsplit(url.strip())
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    netloc = f"{userinfo}:{quote(password, safe='')}@{hostinfo}"
    return urlunsplit(parts._replace(netloc=netloc))


def redis_settings(url: str, **overrides: Any) -> RedisSettings:
    """arq's `RedisSettings` for TRIMO_REDIS_URL; `overrides` set any of its fields."""
    from arq.connections import RedisSettings

    target = parse(url)
    tls = target.tls or Tls()
    host, port = target.hosts[0] if target.hosts else ("localhost", DEFAULT_PORT)
    settings = RedisSettings(
        host=list(target.hosts) if target.sentinel_master is not None else host,
        port=port,
        unix_socket_path=target.unix_socket_path,
        database=target.database,
        username=target.username,
        password=target.password,
        ssl=target.tls is not None,
        ssl_ca_certs=tls.ca_certs,
        ssl_certfile=tls.certfile,
        ssl_keyfile=tls.keyfile,
        ssl_cert_reqs=tls.cert_reqs,
        ssl_check_hostname=tls.check_hostname,
        sentinel=target.sentinel_master is not None,
        sentinel_master=target.sentinel_master or "mymaster",
        conn_timeout=CONNECT_TIMEOUT_SECONDS,
    )
    return dataclasses.replace(settings, **overrides)


def client(url: str, **options: Any) -> redis.Redis:
    """A redis-py client for TRIMO_REDIS_URL; `options` (timeouts…) go to each connection."""
    import redis
    from redis.sentinel import Sentinel

    target = parse(url)
    kwargs = {**_connection_kwargs(target), **options}
    if target.sentinel_master is not None:
        master: redis.Redis = _master(Sentinel, target, options, kwargs)
        return master
    return redis.Redis(**_direct_kwargs(target), **kwargs)


def async_client(url: str, **options: Any) -> aioredis.Redis:
    """The asyncio twin of `client`."""
    import redis.asyncio as aioredis
    from redis.asyncio.sentinel import Sentinel as AsyncSentinel

    target = parse(url)
    kwargs = {**_connection_kwargs(target), **options}
    if target.sentinel_master is not None:
        master: aioredis.Redis = _master(AsyncSentinel, target, options, kwargs)
        return master
    return aioredis.Redis(**_direct_kwargs(target), **kwargs)


# --- helpers ----------------------------------------------------------------------------------


def _connection_kwargs(target: RedisTarget) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "db": target.database,
        "username": target.username,
        "password": target.password,
    }
    if target.tls is not None:
        kwargs.update(
            ssl=True,
            ssl_ca_certs=target.tls.ca_certs,
            ssl_certfile=target.tls.certfile,
            ssl_keyfile=target.tls.keyfile,
            ssl_cert_reqs=target.tls.cert_reqs,
            ssl_check_hostname=target.tls.check_hostname,
        )
    return kwargs


def _direct_kwargs(target: RedisTarget) -> dict[str, Any]:
    if target.unix_socket_path is not None:
        return {"unix_socket_path": target.unix_socket_path}
    host, port = target.hosts[0]
    return {"host": host, "port": port}


def _master(
    sentinel_class: Any, target: RedisTarget, options: dict[str, Any], kwargs: dict[str, Any]
) -> Any:
    """The client of the master the sentinels name (redis-py's Sentinel is untyped).

    The sentinels get the connection's timeouts, not the master's password."""
    timeouts = {key: value for key, value in options.items() if key.startswith("socket_")}
    sentinel = sentinel_class(list(target.hosts), sentinel_kwargs=timeouts, **kwargs)
    return sentinel.master_for(target.sentinel_master)


def _tls(query: dict[str, str]) -> Tls:
    reqs = query.get("ssl_cert_reqs", "required").lower()
    if reqs not in _CERT_REQS:
        raise RedisUrlError(
            f"TRIMO_REDIS_URL: ssl_cert_reqs must be one of {', '.join(_CERT_REQS)}"
        )
    check = query.get("ssl_check_hostname", "false").lower()
    if check not in _TRUE + _FALSE:
        raise RedisUrlError("TRIMO_REDIS_URL: ssl_check_hostname must be true or false")
    return Tls(
        ca_certs=query.get("ssl_ca_certs") or None,
        certfile=query.get("ssl_certfile") or None,
        keyfile=query.get("ssl_keyfile") or None,
        cert_reqs=reqs,
        check_hostname=check in _TRUE,
    )


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    user, colon, password = userinfo.partition(":")
    return unquote(user) or None, unquote(password) if colon and password else None


def _hosts(netloc: str, default_port: int) -> tuple[tuple[str, int], ...]:
    hosts = []
    for item in netloc.split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port_text = rest.removeprefix(":")
        else:
            host, _, port_text = item.partition(":")
        try:
            port = int(port_text) if port_text else default_port
        except ValueError:
            raise RedisUrlError(f"TRIMO_REDIS_URL: {port_text!r} is not a port number") from None
        if not host or not 0 < port < 65536:
            raise RedisUrlError(f"TRIMO_REDIS_URL: {item!r} is not host[:port]")
        hosts.append((host, port))
    if not hosts:
        raise RedisUrlError(f"TRIMO_REDIS_URL names no host; {HINT}")
    return tuple(hosts)


def _db(text: str) -> int:
    if not text.isdigit():
        raise RedisUrlError(f"TRIMO_REDIS_URL: the database must be a number (got {text!r})")
    return int(text)


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host
