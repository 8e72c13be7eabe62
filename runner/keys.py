"""Names of Trimo's Redis keys and queues: one place, shared by the App and runners."""

from __future__ import annotations

APP_QUEUE = "trimo:app"
RUN_FUNCTION = "execute_run"
RUNNERS = "trimo:runners"
ACTIVE_RUNS = "trimo:runs:active"
ALL_RUN_EVENTS = "trimo:run-events"
"""One stream of every run's events (field `run_id`), consumed by the App's reporter group."""
EVENTS_MAXLEN = 10_000
ALL_EVENTS_MAXLEN = 200_000


def run_queue(label: str) -> str:
    return f"trimo:runs:{label}"


def run_events(run_id: str) -> str:
    return f"trimo:run:{run_id}:events"


def runner_info(runner_id: str) -> str:
    return f"trimo:runner:{runner_id}"
