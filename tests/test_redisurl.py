"""TRIMO_REDIS_URL: plain, TLS (`rediss://`) and Sentinel (`redis+sentinel://`), read in one
place and used by arq's pools and workers and by redis-py clients alike.

TLS and Sentinel are tested against real servers: a redis-server with a TLS port and a
certificate made here by `openssl`, and a redis-server in sentinel mode watching a master.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from arq import create_pool
from arq.worker import Worker, func

from app.settings import AppSettings
from runner import redisurl
from runner.redisurl import RedisTarget, RedisUrlError, Tls
from runner.settings import RunnerSettings
from tests.conftest import free_port
from tests.redis_servers import RedisProcess

pytestmark = pytest.mark.redis


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", RedisTarget()),
        ("redis://redis.internal/3", RedisTarget(hosts=(("redis.internal", 6379),), database=3)),
        (
            "redis://:s%40cret@host:7000?db=2",
            RedisTarget(hosts=(("host", 7000),), database=2, password="s@cret"),
        ),
        (
            "redis://trimo:pw@[::1]:6380/1",
            RedisTarget(hosts=(("::1", 6380),), database=1, username="trimo", password="pw"),
        ),
        (
            "rediss://host:6380/0?ssl_ca_certs=/etc/ca.pem&ssl_check_hostname=true",
            RedisTarget(
                hosts=(("host", 6380),), tls=Tls(ca_certs="/etc/ca.pem", check_hostname=True)
            ),
        ),
        (
            "rediss://host/0?ssl_certfile=/c.pem&ssl_keyfile=/k.pem&ssl_cert_reqs=none",
            RedisTarget(
                hosts=(("host", 6379),),
                tls=Tls(certfile="/c.pem", keyfile="/k.pem", cert_reqs="none"),
            ),
        ),
        (
            "unix:///run/redis/redis.sock?db=4",
            RedisTarget(hosts=(), database=4, unix_socket_path="/run/redis/redis.sock"),
        ),
        (
            "redis+sentinel://:pw@s1,s2:26380,10.0.0.3:5000/mymaster/2",
            RedisTarget(
                hosts=(("s1", 26379), ("s2", 26380), ("10.0.0.3", 5000)),
                database=2,
                password="pw",
                sentinel_master="mymaster",
            ),
        ),
    ],
)
def test_urls_are_read(url: str, expected: RedisTarget) -> None:
    assert redisurl.parse(url) == expected


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://:hunter2@host:6379", "must start with one of"),
        ("127.0.0.1:6379", "must start with one of"),
        ("redis://:hunter2@host:port/0", "not a port number"),
        ("redis://:hunter2@host:99999/0", "is not host[:port]"),
        ("redis://:hunter2@host/zero", "database must be a number"),
        ("redis://:hunter2@a,b/0", "use redis+sentinel://"),
        ("redis+sentinel://:hunter2@s1:26379", "names the master"),
        ("redis://:hunter2@host/0?ssl_ca_certs=/ca.pem", "need rediss://"),
        ("rediss://:hunter2@host/0?ssl_cert_reqs=maybe", "ssl_cert_reqs must be one of"),
        ("rediss://:hunter2@host/0?ssl_check_hostname=perhaps", "true or false"),
        ("redis+sentinel://:hunter2@/mymaster", "names no host"),
    ],
)
def test_a_bad_url_says_what_is_wrong_without_its_password(url: str, says: str) -> None:
    with pytest.raises(RedisUrlError) as caught:
        redisurl.parse(url)
    assert says in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_settings_refuse_a_bad_url_and_never_print_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIMO_REDIS_URL", "http://:hunter2@redis:6379/0")
    for settings_class in (AppSettings, RunnerSettings):
        with pytest.raises(ValueError, match="TRIMO_REDIS_URL must start with") as caught:
            settings_class()
        assert "hunter2" not in str(caught.value)


def test_display_hides_the_password() -> None:
    assert redisurl.display("redis://u:hunter2@h:1/2") == "redis://h:1/2"
    assert redisurl.display("rediss://:hunter2@h/0?ssl_cert_reqs=none") == "rediss://h:6379/0"
    assert (
        redisurl.display("redis+sentinel://:hunter2@a,b:1/m/3")
        == "redis+sentinel://a:26379,b:1/m/3"
    )
    assert "hunter2" not in redisurl.display("bogus://:hunter2@x")


def test_arq_settings_follow_the_url() -> None:
    tls = redisurl.redis_settings("rediss://:pw@h:6380/5?ssl_ca_certs=/ca.pem", conn_retries=0)
    assert (tls.host, tls.port, tls.database, tls.password) == ("h", 6380, 5, "pw")
    assert (tls.ssl, tls.ssl_ca_certs, tls.ssl_cert_reqs, tls.conn_retries) == (
        True,
        "/ca.pem",
        "required",
        0,
    )
    sentinel = redisurl.redis_settings("redis+sentinel://s1,s2:26380/primary/1")
    assert sentinel.sentinel and sentinel.sentinel_master == "primary"
    assert sentinel.host == [("s1", 26379), ("s2", 26380)]
    assert sentinel.database == 1


# --- real servers -------------------------------------------------------------------------------


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[RedisProcess, Path]]:
    """A redis-server that speaks only TLS, with a self-signed certificate made here."""
    cert, key = tmp_path / "redis.crt", tmp_path / "redis.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    port = free_port()
    server = RedisProcess(
        tmp_path / "data",
        ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert),
         "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"],
        port=port,
    )  # fmt: skip

    def answers() -> bool:
        probe = subprocess.run(
            ["redis-cli", "--tls", "--cacert", str(cert), "-p", str(port), "ping"],
            capture_output=True,
            text=True,
        )
        return probe.stdout.strip() == "PONG"

    server.start(ready=answers)
    try:
        yield server, cert
    finally:
        server.stop()


async def echo(_ctx: dict[str, object], text: str) -> str:
    return text.upper()


async def round_trip(url: str) -> str:
    """Queue a job through arq's pool, run it with an arq worker: both made from `url`."""
    settings = redisurl.redis_settings(url, conn_retries=0)
    pool = await create_pool(settings)
    try:
        job = await pool.enqueue_job("echo", "over tls", _queue_name="trimo:test:redisurl")
        assert job is not None
        worker = Worker(
            functions=[func(echo, name="echo")],
            queue_name="trimo:test:redisurl",
            redis_settings=settings,
            burst=True,
            handle_signals=False,
            poll_delay=0.05,
        )
        try:
            await worker.main()
        finally:
            await worker.close()
        result: str = await job.result(timeout=10)
        return result
    finally:
        await pool.aclose()


async def test_a_new_connection_outlasts_a_busy_moment(redis_url: str) -> None:
    """On a busy machine the event loop gets to a new connection late: arq's own 1 s made
    every connection here fail ("Timeout connecting to server"), and with it a webhook's
    delivery or a run's report."""
    pool = await create_pool(redisurl.redis_settings(redis_url, conn_retries=0))
    busy = True

    async def hog() -> None:
        while busy:
            time.sleep(1.5)  # the loop runs nothing else meanwhile, as under load
            await asyncio.sleep(0)

    hogging = asyncio.create_task(hog())
    try:
        await pool.connection_pool.disconnect()  # the next command connects anew
        assert await pool.ping()
    finally:
        busy = False
        await hogging
        await pool.aclose()


def test_rediss_with_the_servers_ca_works_for_arq_and_redis_clients(
    tls_redis: tuple[RedisProcess, Path],
) -> None:
    server, cert = tls_redis
    url = f"rediss://127.0.0.1:{server.port}/1?ssl_ca_certs={cert}"
    assert asyncio.run(round_trip(url)) == "OVER TLS"

    client = redisurl.client(url, socket_connect_timeout=3)
    client.set("trimo:test", "sync")
    assert client.get("trimo:test") == b"sync"
    client.close()

    async def async_side() -> bytes | None:
        aclient = redisurl.async_client(url, socket_connect_timeout=3)
        try:
            value: bytes | None = await aclient.get("trimo:test")
            return value
        finally:
            await aclient.aclose()

    assert asyncio.run(async_side()) == b"sync"


def test_rediss_checks_the_certificate(tls_redis: tuple[RedisProcess, Path]) -> None:
    server, _cert = tls_redis
    unknown_ca = f"rediss://127.0.0.1:{server.port}/0"
    with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        redisurl.client(unknown_ca, socket_connect_timeout=3).ping()
    plain = f"redis://127.0.0.1:{server.port}/0"
    with pytest.raises(redis.ConnectionError):
        redisurl.client(plain, socket_connect_timeout=3, socket_timeout=3).ping()
    trusting = f"rediss://127.0.0.1:{server.port}/0?ssl_cert_reqs=none"
    assert redisurl.client(trusting, socket_connect_timeout=3).ping()


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[tuple[RedisProcess, RedisProcess, int]]:
    """A master, its replica, and one sentinel watching them as `trimomaster`."""
    master = RedisProcess(tmp_path / "master").start()
    replica = RedisProcess(
        tmp_path / "replica", ["--replicaof", "127.0.0.1", str(master.port)]
    ).start()
    port = free_port()
    conf = tmp_path / "sentinel" / "sentinel.conf"
    conf.parent.mkdir()
    conf.write_text(
        f"sentinel monitor trimomaster 127.0.0.1 {master.port} 1\n"
        "sentinel down-after-milliseconds trimomaster 30000\n"
        "sentinel failover-timeout trimomaster 30000\n"
    )
    watcher = RedisProcess(conf.parent, ["--sentinel"], port=port, config=conf).start()
    try:
        yield master, replica, port
    finally:
        for server in (watcher, replica, master):
            server.stop()


def test_sentinel_finds_the_master_and_follows_a_failover(
    sentinel: tuple[RedisProcess, RedisProcess, int],
) -> None:
    master, replica, port = sentinel
    url = f"redis+sentinel://127.0.0.1:{port}/trimomaster/3"
    assert asyncio.run(round_trip(url)) == "OVER TLS"
    client = redisurl.client(url, socket_timeout=3, socket_connect_timeout=3)
    client.set("trimo:where", "first master")
    direct = redis.Redis(port=master.port, db=3)
    assert direct.get("trimo:where") == b"first master"

    fail_over(redis.Redis(port=port), replica)
    promoted = redis.Redis(port=replica.port, db=3)
    until(
        "the replica promoted and the old master made its replica",
        lambda: (role(promoted), role(direct)) == ("master", "slave"),
    )
    until("a write through the sentinel's URL", lambda: wrote(client, "after failover"))
    assert promoted.get("trimo:where") == b"after failover"
    assert asyncio.run(round_trip(url)) == "OVER TLS"


FAILOVER_SECONDS = 120.0
"""A busy machine is slow at each step: the replica's sync, the sentinel's discovery of it
(from the master's INFO, every 10 s), the promotion."""


def until(what: str, holds: Callable[[], bool], seconds: float = FAILOVER_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while not holds():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {seconds:.0f}s: {what}")
        time.sleep(0.1)


def fail_over(sentinel: redis.Redis, replica: RedisProcess) -> None:
    """Ask for a failover once the sentinel knows the replica in sync: before that it
    answers NOGOODSLAVE (and may still, for a moment, while it refreshes the replica)."""

    def known() -> bool:
        found = sentinel.sentinel_slaves("trimomaster")
        return any(
            r["port"] == replica.port
            and r["master-link-status"] == "ok"
            and not (r["is_sdown"] or r["is_odown"] or r["is_disconnected"])
            for r in found
        )

    def asked() -> bool:
        try:
            return bool(sentinel.sentinel_failover("trimomaster"))
        except redis.ResponseError:
            return False

    until("the sentinel to know the replica in sync", known)
    until("the sentinel to take the failover", asked)


def role(server: redis.Redis) -> str | None:
    """The server's replication role; None while a reconfiguration drops its clients."""
    try:
        return str(server.info("replication")["role"])
    except redis.ConnectionError:
        return None


def wrote(client: redis.Redis, value: str) -> bool:
    try:
        return bool(client.set("trimo:where", value))
    except (redis.ConnectionError, redis.ReadOnlyError):
        return False
