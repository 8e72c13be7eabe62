"""The setup cache on a runner's disk: one entry per (repository, key), least recently
used out past `TRIMO_SETUP_CACHE_MAX`.

    <cache_dir>/setup/<repo>/<key>/   an entry: disk.img (or root/ when disks are off),
                                       `size` (bytes, written once) and `use.lock`
    <cache_dir>/setup/.staging/       entries being made, renamed into place when done

An entry is made once, whole, and never written again: it appears by one rename after
its setup succeeded, and a run only ever sees it through an overlay whose lower layer is
a read-only mount of it (`runner.setup.layers`). Runs hold a shared lock on its
`use.lock` while they use it; eviction takes the lock exclusively, without waiting, and
so never removes an entry a run is using. Repositories never share an entry: the path
holds the repository's own key.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from runner import disk, gitops
from runner.errors import TrimoError

DEFAULT_MAX_BYTES: Final = 20 * 1024**3
SIZE_NAME: Final = "size"
USE_LOCK: Final = "use.lock"
_STAGING: Final = ".staging"
_TRASH: Final = ".trash"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evicted:
    entries: int
    bytes: int


class Store:
    """Entries under `root`, at most `max_bytes` of them once a new one is in. Runners may
    share a cache directory: each stages its entries in a place of its own."""

    def __init__(self, root: Path, runner_id: str, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._staging = root / _STAGING / gitops.repo_key(runner_id)

    def entry(self, clone_url: str, key: str) -> Path:
        return self.root / gitops.repo_key(clone_url) / key

    def build_lock(self, clone_url: str, key: str) -> Path:
        """Held while the entry is made, so one key is set up once at a time."""
        return self.root / gitops.repo_key(clone_url) / f"{key}.lock"

    def find(self, clone_url: str, key: str) -> Path | None:
        """The entry, if it is made; marked as used now."""
        entry = self.entry(clone_url, key)
        if not (entry / SIZE_NAME).is_file():
            return None
        with contextlib.suppress(OSError):
            os.utime(entry)
        return entry

    def staging(self) -> Path:
        place = self._staging / secrets.token_hex(8)
        place.mkdir(parents=True, mode=0o700)
        return place

    def publish(self, staging: Path, clone_url: str, key: str) -> Path:
        """Put a made entry in place (its size noted); an entry already there wins."""
        (staging / SIZE_NAME).write_text(str(allocated(staging)))
        (staging / USE_LOCK).touch()
        entry = self.entry(clone_url, key)
        entry.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            staging.rename(entry)
        except OSError:
            remove(staging)
        return entry

    @contextmanager
    def held(self, clone_url: str, key: str) -> Iterator[Path | None]:
        """The entry, kept from eviction while the block runs (None: it is not made)."""
        entry = self.entry(clone_url, key)
        try:
            handle = (entry / USE_LOCK).open("r")
        except OSError:
            yield None
            return
        with handle:
            fcntl.flock(handle, fcntl.LOCK_SH)
            yield self.find(clone_url, key)  # None if it was evicted before the lock

    def entries(self) -> list[tuple[float, int, Path]]:
        """(last used, bytes, path) of every made entry, least recently used first."""
        found = []
        for repo in self.root.iterdir() if self.root.is_dir() else ():
            if repo.name.startswith(".") or not repo.is_dir():
                continue
            for entry in repo.iterdir():
                try:
                    size = int((entry / SIZE_NAME).read_text())
                    found.append((entry.stat().st_mtime, size, entry))
                except (OSError, ValueError):
                    continue
        return sorted(found)

    def size(self) -> int:
        return sum(size for _, size, _ in self.entries())

    def evict(self, keep: Path | None = None) -> Evicted:
        """Remove the least recently used entries (never `keep`, never one in use) until
        the rest fit in `max_bytes`."""
        entries = self.entries()
        total = sum(size for _, size, _ in entries)
        count = freed = 0
        for _, size, entry in entries:
            if total <= self.max_bytes:
                break
            if entry == keep or not self._remove_unused(entry):
                continue
            total -= size
            freed += size
            count += 1
        return Evicted(count, freed)

    def _remove_unused(self, entry: Path) -> bool:
        try:
            handle = (entry / USE_LOCK).open("r")
        except OSError:
            return False
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            trash = self.root / _TRASH / f"{time.time_ns()}-{secrets.token_hex(4)}"
            trash.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            entry.rename(trash)
        remove(trash)
        return True

    def clear_leftovers(self) -> None:
        """Remove the half-made entries and the trash this runner's dead process left."""
        for parent in (self._staging, self.root / _TRASH):
            for place in parent.glob("*"):
                with contextlib.suppress(Exception):
                    remove(place)


def allocated(path: Path) -> int:
    """Bytes `path` takes on disk (allocated blocks; links not followed, nor mounts).

    coreutils' `du` walks any depth without recursion: without a disk image the entry's
    files are the setup's, shaped by the repository, and os.walk recurses."""
    proc = subprocess.run(
        ["du", "--summarize", "--one-file-system", "--block-size=1", "--", str(path)],
        capture_output=True,
        text=True,
    )
    size = proc.stdout.split("\t", 1)[0]
    if proc.returncode != 0 or not size.isdigit():
        log.warning("could not measure %s: %s", path, gitops.log_excerpt(proc.stderr))
        raise TrimoError("the setup's files could not be measured", "see the runner's log")
    return int(size)


def remove(place: Path) -> None:
    """Delete an entry or a staging place, its disk unmounted first."""
    root = place / disk.ROOT_NAME
    if os.path.ismount(root):
        disk.unmount(root)
    gitops.remove_tree(place)
