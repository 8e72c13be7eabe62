"""Networks made ahead for the runs to come, each handed to one run only.

    spares = SpareNetworks(make, discard, keep=8)
    network, address = spares.take()     # a fresh one at once, or one made now
    ... the run ...
    spares.done(network)                 # removed in the background
    spares.close()                       # when the process ends or the proxy is replaced

Making a run's network (a bridge, and the egress proxy joining it) is Docker's slowest step
before the agent starts, and it queues behind the container starts of runs going at the
same moment. So `keep` networks are made while the runner is quiet (no network taken for
`quiet` seconds) and one is taken at once when a run starts. A network is never handed out
twice: the next tenant never meets what the last one left on it (its address, the
proxy's connection state, names in Docker's resolver). Ended runs' networks are removed in
the background, once the runner is quiet too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from docker.models.networks import Network

log = logging.getLogger(__name__)

QUIET_SECONDS = 1.0
"""Spares are made, and ended networks removed, once no network was taken for this long."""
CLOSE_SECONDS = 30.0
"""How long `close` waits for a network being made to be done."""

Joined = tuple[Network, str]
"""A network with the proxy on it and nothing else, and the proxy's address there."""


class SpareNetworks:
    """Fresh networks kept ready for the next runs; thread-safe."""

    def __init__(
        self,
        make: Callable[[], Joined],
        discard: Callable[[Network], None],
        keep: int = 0,
        quiet: float = QUIET_SECONDS,
    ) -> None:
        self._make = make
        self._discard = discard
        self.keep = keep
        self._quiet = quiet
        self._lock = threading.Lock()
        self._ready: list[Joined] = []
        self._ended: list[Network] = []
        self._taken_at = 0.0
        self._tending: threading.Thread | None = None
        self._closed = False

    def ready(self) -> list[str]:
        """The names of the networks made ahead and not yet taken."""
        with self._lock:
            return [str(network.name) for network, _address in self._ready]

    def take(self) -> Joined:
        """A network no run has had: one made ahead, else one made now."""
        with self._lock:
            joined = self._ready.pop() if self._ready else None
            self._taken_at = time.monotonic()
        if joined is None:
            joined = self._make()
        self._tend()
        return joined

    def done(self, network: Network) -> None:
        """`network`'s run has ended: remove it (in the background, or now once closed)."""
        with self._lock:
            closed = self._closed
            if not closed:
                self._ended.append(network)
        if closed:
            self._discard(network)
        else:
            self._tend()

    def fill(self) -> None:
        """Start making the spares (in the background)."""
        self._tend()

    def close(self) -> None:
        """Stop making spares; remove those made and the ended runs' networks."""
        with self._lock:
            self._closed = True
            tending = self._tending
        if tending is not None and tending is not threading.current_thread():
            tending.join(CLOSE_SECONDS)
        with self._lock:
            ready, self._ready = self._ready, []
            ended, self._ended = self._ended, []
        for network in [*ended, *(network for network, _address in ready)]:
            self._discard(network)

    def _tend(self) -> None:
        with self._lock:
            if self._tending is not None or self._closed or not self._work():
                return
            self._tending = threading.Thread(target=self._keep_up, name="spare-networks")
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
            log.exception("networks made ahead for the next runs: their upkeep stopped")
        finally:
            with self._lock:
                if self._tending is threading.current_thread():
                    self._tending = None

    def _step(self) -> bool:
        """Remove an ended run's network or make a spare, once the runner is quiet; False
        when there is nothing left to do (or Docker would not make one: the next take
        tries again)."""
        with self._lock:
            if self._closed or not self._work():
                self._tending = None
                return False
            wait = self._taken_at + self._quiet - time.monotonic()
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
            joined = self._make()
        except Exception as exc:
            log.warning("could not make a network ahead for the next run: %s", exc)
            return False
        with self._lock:
            keep = not self._closed and len(self._ready) < self.keep
            if keep:
                self._ready.append(joined)
        if not keep:
            self._discard(joined[0])
        return True
