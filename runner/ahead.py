"""Things made ahead for the runs to come (networks, sandboxes), each handed to one run only.

    spares = MadeAhead(make, discard, keep=8)
    thing = spares.take()                # a fresh one at once, or one made now
    thing = spares.take_ready()          # a fresh one at once, or None
    ... the run ...
    spares.done(thing)                   # discarded in the background
    spares.close()                       # when the process ends or what they need changed

Making a run's network or sandbox is Docker's slowest step before the agent starts, and it
queues behind the container starts of runs going at the same moment. So `keep` of them are
made while the runner is quiet (nothing taken for `quiet` seconds, and no run on its way to
its agent: runner.phases) and one is taken at once when a run starts. Nothing is handed out
twice: the next tenant never meets what the last one left (a network's addresses, the
proxy's connection state, names in Docker's resolver; a sandbox's processes). Ended runs'
things are discarded in the background, once the runner is quiet too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from runner.phases import starting

log = logging.getLogger(__name__)

QUIET_SECONDS = 0.25
"""Spares are made, and ended runs' ones discarded, once none was taken for this long and
no run is starting."""
STARTING_POLL_SECONDS = 0.05
CLOSE_SECONDS = 30.0
"""How long `close` waits for one being made to be done."""

T = TypeVar("T")


class MadeAhead(Generic[T]):
    """Fresh things kept ready for the next runs; thread-safe."""

    def __init__(
        self,
        make: Callable[[], T],
        discard: Callable[[T], None],
        keep: int = 0,
        quiet: float = QUIET_SECONDS,
    ) -> None:
        self._make = make
        self._discard = discard
        self.keep = keep
        self._quiet = quiet
        self._lock = threading.Lock()
        self._ready: list[T] = []
        self._ended: list[T] = []
        self._taken_at = 0.0
        self._tending: threading.Thread | None = None
        self._closed = False

    def ready(self) -> list[T]:
        """Those made ahead and not yet taken."""
        with self._lock:
            return list(self._ready)

    def take(self) -> T:
        """One no run has had: one made ahead, else one made now."""
        thing = self.take_ready()
        return self._make() if thing is None else thing

    def take_ready(self) -> T | None:
        """One made ahead that no run has had, or None when none is ready."""
        with self._lock:
            thing = self._ready.pop() if self._ready else None
            self._taken_at = time.monotonic()
        self._tend()
        return thing

    def done(self, thing: T) -> None:
        """Its run has ended: discard it (in the background, or now once closed)."""
        with self._lock:
            closed = self._closed
            if not closed:
                self._ended.append(thing)
        if closed:
            self._discard(thing)
        else:
            self._tend()

    def fill(self) -> None:
        """Start making the spares (in the background)."""
        self._tend()

    def close(self) -> None:
        """Stop making spares; discard those made and the ended runs' ones."""
        with self._lock:
            self._closed = True
            tending = self._tending
        if tending is not None and tending is not threading.current_thread():
            tending.join(CLOSE_SECONDS)
        with self._lock:
            ready, self._ready = self._ready, []
            ended, self._ended = self._ended, []
        for thing in [*ended, *ready]:
            self._discard(thing)

    def _tend(self) -> None:
        with self._lock:
            if self._tending is not None or self._closed or not self._work():
                return
            self._tending = threading.Thread(target=self._keep_up, name="made-ahead")
            self._tending.daemon = True
            self._tending.start()

    def _work(self) -> bool:
        """Whether there is something to do (the lock held)."""
        return bool(self._ended) or len(self._ready) < self.keep

    def _keep_up(self) -> None:
        try:
            while self._step():
                pass
        except Exception:
            log.exception("what is made ahead for the next runs: its upkeep stopped")
        finally:
            with self._lock:
                if self._tending is threading.current_thread():
                    self._tending = None

    def _step(self) -> bool:
        """Discard an ended run's one or make a spare, once the runner is quiet; False when
        there is nothing left to do (or one could not be made: the next take tries again)."""
        with self._lock:
            if self._closed or not self._work():
                self._tending = None
                return False
            wait = self._taken_at + self._quiet - time.monotonic()
            if wait <= 0 and starting():
                wait = STARTING_POLL_SECONDS
            ended = self._ended.pop() if self._ended and wait <= 0 else None
        if wait > 0:
            time.sleep(wait)
        elif ended is not None:
            self._discard(ended)
        else:
            return self._add()
        return True

    def _add(self) -> bool:
        """Make one spare; False when Docker would not."""
        try:
            thing = self._make()
        except Exception as exc:
            log.warning("could not make ahead for the next run: %s", exc)
            return False
        with self._lock:
            keep = not self._closed and len(self._ready) < self.keep
            if keep:
                self._ready.append(thing)
        if not keep:
            self._discard(thing)
        return True
