"""Kept work in Redis, where every runner of the fleet reaches it.

Each pipeline has one hash (`contract.kept_work`) of `KeptRecord`s, and each record
that needs one a bundle: a list of `KEPT_CHUNK_BYTES` chunks under a key of its own,
so that no single Redis call is large. A new bundle is written under a key that
expires, and only a transaction that records it makes it last, so a runner that dies
mid-write leaves nothing behind. All of a pipeline's bundles together stay under
`TRIMO_KEPT_MAX`; beyond it, `put` refuses with words for a person.

The bytes are only stored here. A runner verifies a bundle before its mirror takes
it (`runner.handoff.import_bundle`): this store is not trusted more than a file.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import redis

from runner import contract
from runner.errors import TrimoError
from runner.handoff import size_text
from runner.kept import BundleRef, KeptRecord

log = logging.getLogger(__name__)
T = TypeVar("T")

STAGING_SECONDS = 3600
"""A bundle being written expires unless a record claims it within this time."""


class KeptTooBig(TrimoError):
    """The pipeline's kept bundles would be over `TRIMO_KEPT_MAX`."""


class StoreUnavailable(TrimoError):
    """Redis did not answer, or holds something other than what a record says."""


class KeptStore:
    """A pipeline's kept commits in Redis (a synchronous client: runs go in threads)."""

    def __init__(self, client: redis.Redis, max_bytes: int) -> None:
        self.redis = client
        self.max_bytes = max_bytes

    def entries(self, pipeline: str) -> list[KeptRecord]:
        """Every kept set of `pipeline`, pending first, then by number."""
        raw = self._call(lambda: self.redis.hgetall(contract.kept_work(pipeline)))
        found = []
        for value in raw.values():
            try:
                found.append(KeptRecord.model_validate_json(value))
            except ValueError:
                log.warning("a kept record of %s is unreadable", pipeline)
        return sorted(found, key=lambda r: (not r.pending, len(r.id), r.id))

    def get(self, pipeline: str, entry: str) -> KeptRecord | None:
        raw = self._call(lambda: self.redis.hget(contract.kept_work(pipeline), entry))
        if raw is None:
            return None
        try:
            return KeptRecord.model_validate_json(raw)
        except ValueError:
            log.warning("the kept record %s of %s is unreadable", entry, pipeline)
            return None

    def put(self, record: KeptRecord, bundle: Path | None) -> KeptRecord:
        """Store `record` (and its bundle), replacing the entry of the same id."""
        size = bundle.stat().st_size if bundle is not None else 0
        others = sum(
            r.bundle.size for r in self.entries(record.pipeline) if r.bundle and r.id != record.id
        )
        if size and size + others > self.max_bytes:
            already = f" beside {size_text(others)} kept before" if others else ""
            raise KeptTooBig(
                f"they are {size_text(size)} as a bundle{already}, over the "
                f"{size_text(self.max_bytes)} a pipeline may keep in Trimo's store "
                "(TRIMO_KEPT_MAX)"
            )
        if bundle is not None:
            record = record.model_copy(update={"bundle": self._write(record.pipeline, bundle)})
        else:
            record = record.model_copy(update={"bundle": None})
        old = self.get(record.pipeline, record.id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(contract.kept_work(record.pipeline), record.id, record.model_dump_json())
        if record.bundle is not None:
            pipe.persist(record.bundle.key)
        if old is not None and old.bundle is not None and old.bundle != record.bundle:
            pipe.delete(old.bundle.key)
        self._call(pipe.execute)
        return record

    def rename(self, record: KeptRecord, entry: str, reason: str) -> KeptRecord:
        """Move `record` (and its bundle) to id `entry`, with a new reason."""
        moved = record.model_copy(update={"id": entry, "reason": reason})
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(contract.kept_work(record.pipeline), entry, moved.model_dump_json())
        pipe.hdel(contract.kept_work(record.pipeline), record.id)
        self._call(pipe.execute)
        return moved

    def drop(self, pipeline: str, entry: str) -> None:
        """Forget an entry (its commits are on the remote now, or kept elsewhere)."""
        old = self.get(pipeline, entry)
        if old is None:
            return
        pipe = self.redis.pipeline(transaction=True)
        pipe.hdel(contract.kept_work(pipeline), entry)
        if old.bundle is not None:
            pipe.delete(old.bundle.key)
        self._call(pipe.execute)

    def read_bundle(self, record: KeptRecord, dest: Path) -> None:
        """Write `record`'s bundle to `dest` (host-only), checked against its size, digest
        and this store's cap as it is read."""
        ref = record.bundle
        if ref is None:
            raise StoreUnavailable(f"the kept set {record.id} has no bundle")
        if ref.size > self.max_bytes:
            raise StoreUnavailable(f"the kept bundle is over {size_text(self.max_bytes)}")
        if self._call(lambda: self.redis.llen(ref.key)) != ref.chunks:
            raise StoreUnavailable("the kept bundle is incomplete in Trimo's store")
        digest, written = hashlib.sha256(), 0
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            for index in range(ref.chunks):
                chunk = self._chunk(ref.key, index)
                written += len(chunk or b"")
                if chunk is None or written > ref.size:
                    raise StoreUnavailable("the kept bundle is not what its record says")
                digest.update(chunk)
                out.write(chunk)
        if written != ref.size or digest.hexdigest() != ref.sha256:
            raise StoreUnavailable("the kept bundle is not what its record says")

    def _chunk(self, key: str, index: int) -> bytes | None:
        found = self._call(lambda: self.redis.lindex(key, index))
        return found if isinstance(found, bytes) else None

    def _write(self, pipeline: str, bundle: Path) -> BundleRef:
        key = contract.kept_bundle(pipeline, secrets.token_hex(8))
        digest, size, chunks = hashlib.sha256(), 0, 0
        with bundle.open("rb") as source:
            while chunk := source.read(contract.KEPT_CHUNK_BYTES):
                pipe = self.redis.pipeline(transaction=False)
                pipe.rpush(key, chunk)
                pipe.expire(key, STAGING_SECONDS)
                self._call(pipe.execute)
                digest.update(chunk)
                size += len(chunk)
                chunks += 1
        return BundleRef(key=key, size=size, sha256=digest.hexdigest(), chunks=chunks)

    @staticmethod
    def _call(call: Callable[[], Awaitable[T] | T]) -> T:
        """A call on the synchronous client, its Redis errors in words for a person."""
        try:
            result = call()
        except redis.RedisError as exc:
            log.warning("Redis failed on kept work: %s", exc)
            raise StoreUnavailable(
                f"Trimo's store (Redis) did not answer ({type(exc).__name__})"
            ) from exc
        assert not inspect.isawaitable(result)
        return result
