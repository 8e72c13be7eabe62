"""A run's (or preview's) environment from the setup cache: found, or made once, then
restored in O(1).

    with cache.ready(job, clone_url, mirror, scratch, owner) as environment:
        environment.place(workspace, home)   # after the workspace is made
        ... start the sandbox with environment.mounts among its writable mounts ...

A key with an entry is a hit: its paths are overlaid at once. A miss makes the entry
first, under the key's lock (a second run on the same key waits and then hits), and then
evicts least recently used entries past the cache's size. A kept workspace path the repository
does not ignore at the commit (`runner.setup.ignored`), a failed or a timed-out setup
raises `SetupFailed`; nothing is kept and no sandbox sees a half-made environment.

A job on a pipeline's own commits (`Job.scope`) takes the repository's entry when there is
one, else its pipeline's: what it makes is never the repository's.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis

from runner import figures, gitops
from runner.attempt import EventSink
from runner.errors import TrimoError
from runner.events import RawLog
from runner.job import Outcome, RunFinished
from runner.setup import layers
from runner.setup.build import Builder, Job, SetupFailed, build
from runner.setup.ignored import not_ignored, not_ignored_reason
from runner.setup.key import file_ids, setup_key
from runner.setup.store import Store, remove


@dataclass
class Tally:
    """What the cache did since the runner last reported it (`runner.figures`)."""

    hits: int = 0
    misses: int = 0
    evicted: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, hits: int = 0, misses: int = 0, evicted: int = 0) -> None:
        with self._lock:
            self.hits += hits
            self.misses += misses
            self.evicted += evicted

    def take(self) -> tuple[int, int, int]:
        """(hits, misses, evicted) since the last take."""
        with self._lock:
            taken = (self.hits, self.misses, self.evicted)
            self.hits = self.misses = self.evicted = 0
        return taken


@dataclass(frozen=True)
class Environment:
    """A restored entry: host directory → where it goes in the sandbox."""

    mounts: dict[Path, str]
    paths: list[str]
    owner: int | None

    def place(self, workspace: Path, home: Path) -> None:
        """Make where the paths go in a (new) workspace and home, never through a link."""
        for path in self.paths:
            base, below = layers.on_host(path, workspace, home)
            layers.make_dirs(base, below, self.owner)


MAX_TRIES = 3
"""Looks for an entry, each after making it when missing (another runner sharing the cache
directory may evict it in between)."""


class SetupCache:
    """This runner's setup entries and how it makes them."""

    def __init__(self, builder: Builder, store: Store) -> None:
        self.builder = builder
        self.store = store
        self.tally = Tally()

    @contextmanager
    def ready(self, job: Job, clone_url: str, mirror: Path, scratch: Path) -> Iterator[Environment]:
        """`job`'s entry overlaid (upper layers under `scratch`, on the pipeline's disk)."""
        files = file_ids(mirror, job.sha, job.spec.cache_key)
        shared = setup_key(job.spec, job.image_id, files)
        if missing := not_ignored(mirror, job.sha, job.spec.paths):
            raise SetupFailed(not_ignored_reason(missing[0]))
        key = setup_key(job.spec, job.image_id, files, job.scope) if job.scope else shared
        hit = True
        for _ in range(MAX_TRIES):
            for found in dict.fromkeys((shared, key)):  # the repository's entry, if made
                with self.store.held(clone_url, found) as entry:
                    if entry is not None:
                        self.tally.add(hits=int(hit), misses=int(not hit))
                        if not hit:
                            self.tally.add(evicted=self.store.evict(keep=entry).entries)
                        owner = self.builder.owner
                        paths = job.spec.paths
                        with layers.restored(entry, paths, scratch, owner) as mounts:
                            yield Environment(mounts, paths, owner)
                        return
            with gitops.locked(self.store.build_lock(clone_url, key)):
                if self.store.find(clone_url, key) is None:  # else made while it waited
                    self._make(job, clone_url, key)
                    hit = False
        raise TrimoError(
            "The setup was made, but its entry went before the run could use it.",
            "the setup cache may be too small for it: raise TRIMO_SETUP_CACHE_MAX",
        )

    async def report(self, redis: aioredis.Redis, runner_id: str) -> None:
        """What the cache did since its last report (runs and previews), and its size, to
        the runner's figures (/metrics)."""
        hits, misses, evicted = self.tally.take()
        size = await asyncio.get_running_loop().run_in_executor(None, self.store.size)
        await figures.observe_setup(
            redis, runner_id, hits=hits, misses=misses, evicted=evicted, size=size
        )

    def _make(self, job: Job, clone_url: str, key: str) -> None:
        staging = self.store.staging()
        try:
            build(self.builder, job, staging)
            self.store.publish(staging, clone_url, key)
        except BaseException:
            remove(staging)
            raise


REASON_LINES = 10
REASON_CHARS = 1500


def setup_failure(run_id: str, failed: SetupFailed, emit: EventSink) -> RunFinished:
    """A run whose setup failed ends like a failed run, its agent never started: the setup's
    last lines go to the run's log, and the last few into its reason."""
    for line in failed.tail.splitlines():
        emit(RawLog(line=line))
    return RunFinished(
        run_id=run_id,
        outcome=(
            Outcome.CANCELLED
            if failed.cancelled
            else Outcome.TIMED_OUT
            if failed.timed_out
            else Outcome.FAILURE
        ),
        reason=failure_reason(failed),
    )


def failure_reason(failed: SetupFailed) -> str:
    """`failed`'s reason and its last lines, in a code fence they cannot close."""
    reason = f"{failed.reason}; the agent did not start"
    last = "\n".join(failed.tail.splitlines()[-REASON_LINES:])[-REASON_CHARS:]
    if not last.strip():
        return reason
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", last)), default=0))
    return f"{reason}. Its last lines:\n{fence}\n{last}\n{fence}"
