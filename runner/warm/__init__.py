"""Sandboxes started before their runs, so that runs started together do not queue behind
Docker's container starts (runner.warm.box, runner.warm.pool)."""

from __future__ import annotations

from runner.warm.box import SERVED, BoxKey, WarmBox, WarmContainer, forget, note
from runner.warm.pool import clear, close, keep, take, trim_stale

__all__ = [
    "SERVED",
    "BoxKey",
    "WarmBox",
    "WarmContainer",
    "clear",
    "close",
    "forget",
    "keep",
    "note",
    "take",
    "trim_stale",
]
