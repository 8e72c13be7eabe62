"""Kept work in Redis (`runner.keptstore`), on a real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from runner import contract
from runner.kept import KeptRecord, kept_branch, kept_local_ref, next_number
from runner.keptstore import STAGING_SECONDS, KeptStore, KeptTooBig, StoreUnavailable

PIPELINE = "acme.widgets.7"


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    found = redis.Redis.from_url(redis_url)
    yield found
    found.close()


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(contract, "KEPT_CHUNK_BYTES", 1000)


def record(entry: str = contract.KEPT_PENDING, head: str = "a") -> KeptRecord:
    return KeptRecord(
        id=entry, pipeline=PIPELINE, clone_url="http://git.example.com/r.git", run_id="r-1",
        reason="refused", head=head * 40, base="b" * 40, count=1,
    )  # fmt: skip


def bundle_of(tmp_path: Path, size: int, name: str = "x.bundle") -> Path:
    path = tmp_path / name
    path.write_bytes(bytes(range(256)) * (size // 256) + b"z" * (size % 256))
    return path


def test_a_bundle_goes_in_chunks_and_comes_back_whole(
    client: redis.Redis, tmp_path: Path, small_chunks: None
) -> None:
    store = KeptStore(client, 1 << 20)
    source = bundle_of(tmp_path, 4500)
    stored = store.put(record(), source)

    assert stored.bundle is not None and stored.bundle.chunks == 5
    assert client.ttl(stored.bundle.key) == -1, "a recorded bundle must not expire"
    assert store.get(PIPELINE, contract.KEPT_PENDING) == stored
    back = tmp_path / "back.bundle"
    store.read_bundle(stored, back)
    assert back.read_bytes() == source.read_bytes()


def test_replacing_or_dropping_a_set_deletes_its_old_bytes(
    client: redis.Redis, tmp_path: Path
) -> None:
    store = KeptStore(client, 1 << 20)
    first = store.put(record(), bundle_of(tmp_path, 100))
    second = store.put(record(head="c"), bundle_of(tmp_path, 200, "y.bundle"))
    assert first.bundle is not None and second.bundle is not None
    assert not client.exists(first.bundle.key) and client.exists(second.bundle.key)

    moved = store.rename(second, "kept-1", "set aside")
    assert [e.id for e in store.entries(PIPELINE)] == ["kept-1"]
    assert moved.bundle == second.bundle and client.exists(second.bundle.key)
    store.drop(PIPELINE, "kept-1")
    assert store.entries(PIPELINE) == [] and not client.keys("trimo:kept:*")


def test_the_cap_counts_every_set_of_the_pipeline(client: redis.Redis, tmp_path: Path) -> None:
    store = KeptStore(client, 1000)
    store.put(record("kept-1"), bundle_of(tmp_path, 600))
    store.put(record(), bundle_of(tmp_path, 300, "y.bundle"))
    store.put(record(), bundle_of(tmp_path, 400, "z.bundle"))  # replaces the 300

    with pytest.raises(KeptTooBig) as refused:
        store.put(record(), bundle_of(tmp_path, 500, "w.bundle"))
    assert "TRIMO_KEPT_MAX" in refused.value.message and "beside 600 bytes" in refused.value.message
    assert [e.bundle.size for e in store.entries(PIPELINE) if e.bundle] == [400, 600]


def test_a_write_cut_short_leaves_only_bytes_that_expire(
    client: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = KeptStore(client, 1 << 20)

    def gone(*_args: object) -> None:
        raise StoreUnavailable("Redis went away")

    monkeypatch.setattr(store, "get", gone)
    with pytest.raises(StoreUnavailable):
        store.put(record(), bundle_of(tmp_path, 100))
    (staged,) = client.keys("trimo:kept:*:bundle:*")
    assert 0 < client.ttl(staged) <= STAGING_SECONDS
    assert not client.exists(contract.kept_work(PIPELINE))


def test_bytes_that_are_not_what_the_record_says_are_refused(
    client: redis.Redis, tmp_path: Path
) -> None:
    store = KeptStore(client, 1 << 20)
    stored = store.put(record(), bundle_of(tmp_path, 300))
    assert stored.bundle is not None
    out = tmp_path / "out.bundle"

    client.lset(stored.bundle.key, 0, b"x" * 300)
    with pytest.raises(StoreUnavailable, match="not what its record says"):
        store.read_bundle(stored, out)
    client.rpush(stored.bundle.key, b"more")
    with pytest.raises(StoreUnavailable, match="incomplete"):
        store.read_bundle(stored, out)
    with pytest.raises(StoreUnavailable, match="over"):
        KeptStore(client, 100).read_bundle(stored, out)


def test_redis_away_is_said_in_words(tmp_path: Path) -> None:
    store = KeptStore(redis.Redis(port=1, socket_connect_timeout=0.5), 1000)
    with pytest.raises(StoreUnavailable, match="did not answer"):
        store.entries(PIPELINE)


def test_the_next_kept_number_follows_branches_and_entries() -> None:
    assert next_number([]) == 1
    assert next_number(["refs/heads/trimo/p-kept-2", "kept-5", "refs/trimo/kept/p-kept-3"]) == 6
    assert next_number([kept_branch("p", 2), kept_local_ref("p", 7), "kept-1"]) == 8
    assert next_number(["refs/heads/trimo/p-kept-x", "pending"]) == 1
