"""Publishing a run's events to Redis, without ever blocking or failing the run.

Events go to the run's own bounded stream and to the stream the App reports
from. When Redis is away they wait in memory (and, for a run's last word, on
disk) and are sent when it is back.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from pathlib import Path

import redis

from runner import contract
from runner.job import RunEvent

log = logging.getLogger("trimo.runner")


class EventPublisher:
    """Thread-safe; one per runner process."""

    def __init__(self, client: redis.Redis, spool_dir: Path) -> None:
        self._client = client
        self._spool = spool_dir
        self._pending: deque[tuple[str, str]] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self.redis_ok = True
        self._thread = threading.Thread(target=self._flush_loop, daemon=True, name="publisher")
        self._thread.start()
        self._load_spool()

    def publish(self, run_id: str, event: RunEvent) -> None:
        with self._lock:
            self._pending.append((run_id, event.model_dump_json()))
        self._wake.set()

    def flush(self, timeout: float) -> bool:
        """Wait until everything is sent; False (and spooled to disk) if Redis stayed away."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._wake.set()
            with self._lock:
                if not self._pending:
                    return True
            time.sleep(0.05)
        self._write_spool()
        return False

    def close(self, timeout: float = 5.0) -> None:
        self.flush(timeout)
        self._closed = True
        self._wake.set()

    def _flush_loop(self) -> None:
        backoff = 0.2
        while not self._closed:
            self._wake.wait(1.0)
            self._wake.clear()
            while True:
                with self._lock:
                    if not self._pending:
                        break
                    run_id, payload = self._pending[0]
                try:
                    self._send(run_id, payload)
                except redis.RedisError as exc:
                    if self.redis_ok:
                        log.error("Redis is unreachable (%s); events wait until it is back", exc)
                    self.redis_ok = False
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                if not self.redis_ok:
                    log.warning("Redis is back; sending the events that waited")
                self.redis_ok, backoff = True, 0.2
                with self._lock:
                    if self._pending and self._pending[0] == (run_id, payload):
                        self._pending.popleft()

    def _send(self, run_id: str, payload: str) -> None:
        pipe = self._client.pipeline(transaction=False)
        pipe.xadd(contract.run_events(run_id), {"event": payload}, maxlen=contract.EVENTS_MAXLEN)
        pipe.xadd(
            contract.ALL_RUN_EVENTS,
            {"run_id": run_id, "event": payload},
            maxlen=contract.ALL_EVENTS_MAXLEN,
        )
        pipe.execute()

    def _spool_file(self) -> Path:
        return self._spool / "unsent-events.jsonl"

    def _write_spool(self) -> None:
        with self._lock:
            items = list(self._pending)
            self._pending.clear()
        if items:
            self._spool.mkdir(parents=True, exist_ok=True)
            with self._spool_file().open("a") as handle:
                for run_id, payload in items:
                    handle.write(json.dumps({"run_id": run_id, "event": payload}) + "\n")

    def _load_spool(self) -> None:
        path = self._spool_file()
        if not path.exists():
            return
        lines = path.read_text().splitlines()
        path.unlink()
        with self._lock:
            for line in lines:
                try:
                    item = json.loads(line)
                    self._pending.append((item["run_id"], item["event"]))
                except (ValueError, KeyError):
                    continue
        self._wake.set()
