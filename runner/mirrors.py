"""Upkeep of the runner's mirror cache: `git gc` on a schedule, and its size for `/metrics`.

A mirror (`gitops.ensure_mirror`) takes every fetch and every run's bundle, and leaves
git's own automatic gc off, so without upkeep its loose objects and packs grow with each
run, and the objects of runs whose refs are gone stay for ever. Every `LOOK_SECONDS` the
runner measures its mirrors and gc-s those that changed since their last gc and were last
gc-ed over `GC_EVERY_SECONDS` ago, one at a time, within `GC` bounds. Unreachable objects
go once git's prune grace (two weeks) has passed, so a run's objects outlive its ref only
that long.

A gc holds the mirror's lock, the one a fetch into it takes, without waiting for it: a
mirror busy with a fetch is tried again at the next look, and runs of other repositories
never wait for a gc.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from runner import bounded, gitops
from runner.errors import GitError

log = logging.getLogger(__name__)

LOOK_SECONDS: Final = 600.0
GC_EVERY_SECONDS: Final = 24 * 3600.0
GC: Final = bounded.Bounds(cpu_seconds=900, memory_bytes=1024 * bounded.MB, wall_seconds=1800)
"""What one mirror's gc may cost the host."""
STAMP_SUFFIX: Final = ".gc"
"""Beside `<key>.git`: a file whose time is the mirror's last gc."""
CHANGES: Final = ("FETCH_HEAD", "packed-refs", "objects", "objects/pack", "refs")
"""Paths in a mirror whose time moves when it takes objects or refs."""


@dataclass(frozen=True)
class Mirror:
    """One mirror, as `survey` found it."""

    path: Path
    changed_at: float
    """The newest time of its `CHANGES`."""
    gc_at: float | None
    """When it was last gc-ed; None: never."""

    @property
    def key(self) -> str:
        return self.path.name.removesuffix(".git")

    @property
    def lock(self) -> Path:
        """The lock `gitops.ensure_mirror` holds while it fetches."""
        return self.path.with_name(f"{self.key}.lock")

    @property
    def stamp(self) -> Path:
        return self.path.with_name(self.key + STAMP_SUFFIX)


@dataclass(frozen=True)
class Upkeep:
    """What one look found and did."""

    mirrors: int = 0
    bytes: int = 0
    """Their size on disk, after any gc."""
    collected: int = 0
    failed: int = 0
    busy: int = 0
    """Due, but a fetch held the mirror: tried again at the next look."""


def due(mirrors: Iterable[Mirror], now: float, every: float = GC_EVERY_SECONDS) -> list[Mirror]:
    """The mirrors to gc now, the longest waiting first: never gc-ed, or changed since their
    last gc and that gc at least `every` seconds ago."""
    waiting = [
        m for m in mirrors if m.gc_at is None or (m.changed_at > m.gc_at and now - m.gc_at >= every)
    ]
    return sorted(waiting, key=lambda m: (m.gc_at is not None, m.gc_at or 0.0, m.key))


def survey(mirrors_dir: Path) -> list[Mirror]:
    """The complete mirrors in `mirrors_dir` (a fetch's `.tmp` is not one yet)."""
    found = []
    for path in sorted(mirrors_dir.glob("*.git")) if mirrors_dir.is_dir() else []:
        if not (path / "HEAD").is_file():
            continue
        times = [t for name in CHANGES if (t := _mtime(path / name)) is not None]
        stamp = path.with_name(path.name.removesuffix(".git") + STAMP_SUFFIX)
        found.append(Mirror(path, max(times, default=0.0), _mtime(stamp)))
    return found


def size(path: Path) -> int:
    """Bytes of the regular files under `path`, links not followed."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue  # gone meanwhile (a gc replaced a pack)
    return total


def collect(mirror: Mirror) -> bool | None:
    """`git gc` the mirror under its lock, if no fetch holds it; None when one did.
    True when the gc ran through; its stamp then says when."""
    with gitops.locked_now(mirror.lock) as taken:
        if not taken:
            return None
        try:
            gitops.git(mirror.path, "gc", "--quiet", what="git gc of a mirror failed", bounds=GC)
        except GitError as exc:
            log.warning("could not gc mirror %s: %s", mirror.key, exc.message)
            return False
        mirror.stamp.touch()
        return True


def tend(mirrors_dir: Path, now: float, every: float = GC_EVERY_SECONDS) -> Upkeep:
    """One look at `mirrors_dir`: gc what is due, then measure every mirror."""
    found = survey(mirrors_dir)
    results = [collect(mirror) for mirror in due(found, now, every)]
    return Upkeep(
        mirrors=len(found),
        bytes=sum(size(mirror.path) for mirror in found),
        collected=results.count(True),
        failed=results.count(False),
        busy=results.count(None),
    )


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None
