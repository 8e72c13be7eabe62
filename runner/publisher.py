"""Publishing a run's events to Redis, without ever blocking or failing the run.

Events go to the run's own stream and to the stream the App reports from, each entry cut
to size and each run within its log budget (`runner.eventcap`). When Redis is away they
wait in memory and, when a run ends, on disk, both bounded in bytes: an agent's lines
past the room are not kept but counted in their run's last word; the runner's own events
always are. The spool is sent when Redis answers again, or when the runner next starts.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import redis

from runner import contract
from runner.disk import parse_size
from runner.eventcap import RUN_LOG_MAX_DEFAULT, Entry, RunLog, stamped
from runner.job import RunEvent, RunFinished

log = logging.getLogger("trimo.runner")

PENDING_MAX_BYTES: Final = 32 << 20
"""The most an agent's events take while they wait in memory for Redis."""
SPOOL_MAX_BYTES: Final = 64 << 20
"""The most an agent's events take in the spool file (the runner's own always fit)."""
SPOOL_NAME: Final = "unsent-events.jsonl"


class EventPublisher:
    """Thread-safe; one per runner process."""

    def __init__(
        self,
        client: redis.Redis,
        spool_dir: Path,
        run_log_max: int = parse_size(RUN_LOG_MAX_DEFAULT),
        pending_max: int = PENDING_MAX_BYTES,
        spool_max: int = SPOOL_MAX_BYTES,
    ) -> None:
        self._client = client
        self._spool = spool_dir
        self._run_log_max = run_log_max
        self._pending_max = pending_max
        self._spool_max = spool_max
        self._runs: dict[str, RunLog] = {}
        self._pending: deque[tuple[str, Entry]] = deque()
        self._pending_bytes = 0
        self._lock = threading.Lock()
        self._spool_lock = threading.Lock()
        """Held while the spool file is written or taken back."""
        self._wake = threading.Event()
        self._closed = False
        self.redis_ok = True
        self._thread = threading.Thread(target=self._flush_loop, daemon=True, name="publisher")
        self._thread.start()
        self._load_spool()

    def publish(self, run_id: str, event: RunEvent) -> None:
        with self._lock:
            run = self._runs.setdefault(run_id, RunLog(self._run_log_max))
            for entry in run.admit(event):
                if entry.agent and self._pending_bytes + entry.size > self._pending_max:
                    run.dropped()
                    continue
                self._pending.append((run_id, entry))
                self._pending_bytes += entry.size
            if isinstance(event, RunFinished):
                del self._runs[run_id]
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
                    run_id, entry = self._pending[0]
                try:
                    self._send(run_id, entry)
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
                    if self._pending and self._pending[0][1] is entry:
                        self._pending.popleft()
                        self._pending_bytes -= entry.size
            if self._spool_file().exists() and self._answers():
                self._load_spool()  # Redis is back: what a run left on disk goes too

    def _answers(self) -> bool:
        try:
            return bool(self._client.ping())
        except redis.RedisError:
            return False

    def _send(self, run_id: str, entry: Entry) -> None:
        pipe = self._client.pipeline(transaction=False)
        pipe.xadd(contract.run_events(run_id), {"event": entry.own}, maxlen=contract.EVENTS_MAXLEN)
        if entry.report is not None:
            pipe.xadd(
                contract.ALL_RUN_EVENTS,
                {"run_id": run_id, "event": entry.report},
                maxlen=contract.ALL_EVENTS_MAXLEN,
            )
        pipe.execute()

    def _spool_file(self) -> Path:
        return self._spool / SPOOL_NAME

    def _write_spool(self) -> None:
        """Append what waits to the spool; an agent's lines past its size are counted in
        their run's last word instead."""
        with self._lock:
            items = list(self._pending)
            self._pending.clear()
            self._pending_bytes = 0
        if items:
            with self._spool_lock:
                self._append_to_spool(items)

    def _append_to_spool(self, items: list[tuple[str, Entry]]) -> None:
        path = self._spool_file()
        size = path.stat().st_size if path.exists() else 0
        kept: list[tuple[str, Entry]] = []
        dropped: Counter[str] = Counter()
        for run_id, entry in items:
            line = len(_spool_line(run_id, entry).encode())
            if entry.agent and size + line > self._spool_max:
                dropped[run_id] += 1
                continue
            kept.append((run_id, entry))
            size += line
        if dropped:
            log.warning("the spool is full: %d lines not kept", dropped.total())
            kept = [(run_id, _stamped(entry, dropped[run_id])) for run_id, entry in kept]
            with self._lock:
                for run_id, lines in dropped.items():
                    if run_id in self._runs:  # still running: its last word is still to come
                        self._runs[run_id].dropped(lines)
        self._spool.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            handle.writelines(_spool_line(run_id, entry) for run_id, entry in kept)

    def _load_spool(self) -> None:
        path = self._spool_file()
        with self._spool_lock:
            if not path.exists():
                return
            loaded = list(_read_spool(path, self._spool_max))
            path.unlink()
        with self._lock:
            for run_id, entry in loaded:
                self._pending.append((run_id, entry))
                self._pending_bytes += entry.size
        self._wake.set()


def _stamped(entry: Entry, lines_not_kept: int) -> Entry:
    if entry.agent or not lines_not_kept:
        return entry
    report = None if entry.report is None else stamped(entry.report, lines_not_kept)
    return Entry(stamped(entry.own, lines_not_kept), report, agent=False)


def _spool_line(run_id: str, entry: Entry) -> str:
    item = {"run_id": run_id, "event": entry.own, "report": entry.report, "agent": entry.agent}
    return json.dumps(item, ensure_ascii=False) + "\n"


def _read_spool(path: Path, limit: int) -> Iterator[tuple[str, Entry]]:
    """The spool's entries, an agent's within `limit` bytes (a spool written before it was
    bounded may be larger); unreadable lines skipped."""
    size = 0
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                item = json.loads(line)
                run_id, own = item["run_id"], item["event"]
                report = item.get("report", own)
            except (ValueError, KeyError, TypeError):
                continue
            if not (isinstance(run_id, str) and isinstance(own, str)):
                continue
            if not isinstance(report, str | None):
                continue
            entry = Entry(own, report, agent=bool(item.get("agent")))
            if entry.agent and size + len(line.encode()) > limit:
                continue
            size += len(line.encode())
            yield run_id, entry
