"""This process's warm boxes: made while the runner is quiet, for the kind of run it last had.

    warm.keep(8, cache_dir, runner_id)   # a runner that starts up to 8 runs at once
    box = warm.take(client, key)         # a box for `key` at once, or None (start one cold)
    warm.close()                         # when the runner stops

Boxes are made for one `BoxKey` at a time, the last one a run asked for: a run with
another image, user, limits or network starts cold, and the boxes made for the old key
are removed (so a new image, or new limits, trims them). Their directories live on a
small tmpfs of this runner's own under the cache directory, unmounted when it stops, or
by `clear` when a runner with its id starts after a crash.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
from pathlib import Path

import docker
import docker.errors

from runner.ahead import MadeAhead
from runner.errors import TrimoError
from runner.warm import mounts
from runner.warm.box import BoxKey, Slot, WarmBox, make_box

log = logging.getLogger(__name__)


def warm_dir(cache_dir: Path, runner_id: str) -> Path:
    """Where `runner_id`'s boxes share their directories (one tmpfs per runner)."""
    return cache_dir / "warm" / hashlib.sha256(runner_id.encode()).hexdigest()[:12]


def clear(cache_dir: Path, runner_id: str) -> bool:
    """Unmount what a killed process of `runner_id` left of its boxes' directories (its
    containers are removed with the runner's others); whether there was something."""
    return mounts.detach(warm_dir(cache_dir, runner_id))


class WarmPool:
    """Boxes made ahead for one key at a time; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keep = 0
        self._dir: Path | None = None
        self._mounted = False
        self._closed = False
        self._boxes: tuple[BoxKey, MadeAhead[WarmBox]] | None = None

    def keep(self, count: int, cache_dir: Path, runner_id: str) -> None:
        """Keep `count` boxes ready (0: none), when this process may mount."""
        if count > 0 and not mounts.can_mount():
            log.info("runs start cold: preparing their sandboxes ahead needs root")
            count = 0
        with self._lock:
            self._keep = count
            self._dir = warm_dir(cache_dir, runner_id)
            self._closed = False

    def take(self, client: docker.DockerClient, key: BoxKey) -> WarmBox | None:
        """A started box for `key` that no run had, or None (and boxes for `key` are made
        once the runner is quiet)."""
        with self._lock:
            if self._keep == 0 or self._dir is None:
                return None
            if self._boxes is None or self._boxes[0] != key:
                old, self._boxes = self._boxes, (key, self._made_ahead(client, key, self._dir))
                self._boxes[1].take_ready()  # as taken now: made once the runner is quiet
                if old is not None:
                    threading.Thread(target=old[1].close, name="warm-trim", daemon=True).start()
                return None
            boxes = self._boxes[1]
        while (box := boxes.take_ready()) is not None:
            if box.claim():
                return box
            log.warning("a prepared sandbox (%s) had stopped; it is removed", box.container.name)
            boxes.done(box)
        return None

    def trim_stale(self, client: docker.DockerClient) -> bool:
        """Remove the boxes when their image's tag names another image now (rebuilt);
        whether it did."""
        with self._lock:
            boxes = self._boxes
        if boxes is None:
            return False
        key = boxes[0]
        try:
            current = client.images.get(key.image).id
        except docker.errors.ImageNotFound:
            current = None
        with self._lock:
            if current == key.image_id or self._boxes is not boxes:
                return False
            self._boxes = None
        log.info("the image %s changed: the sandboxes started ahead for it are removed", key.image)
        boxes[1].close()
        return True

    def ready(self) -> int:
        """How many boxes are ready."""
        with self._lock:
            boxes = self._boxes
        return len(boxes[1].ready()) if boxes else 0

    def close(self) -> None:
        """Remove every box and unmount their directories."""
        with self._lock:
            boxes, self._boxes = self._boxes, None
            self._keep = 0
            self._closed = True
            where = self._dir
        if boxes is not None:
            boxes[1].close()  # waits for a box being made
        with self._lock:
            mounted, self._mounted = self._mounted, False
        if mounted and where is not None:
            mounts.detach(where)

    def _made_ahead(
        self, client: docker.DockerClient, key: BoxKey, where: Path
    ) -> MadeAhead[WarmBox]:
        def make() -> WarmBox:
            self._mount(where)
            name = f"trimo-warm-{secrets.token_hex(6)}"
            return make_box(client, key, Slot(where / name, where / "stage" / name), name)

        return MadeAhead(make, WarmBox.discard, self._keep)

    def _mount(self, where: Path) -> None:
        with self._lock:
            if self._closed:
                raise TrimoError("this runner is stopping: no more sandboxes are made ahead")
            if self._mounted:
                return
            mounts.detach(where)
            mounts.shared_tmpfs(where)
            mounts.private_stage(where / "stage")
            self._mounted = True


_pool = WarmPool()
keep = _pool.keep
take = _pool.take
trim_stale = _pool.trim_stale
close = _pool.close
