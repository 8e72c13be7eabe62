"""Telling systemd that a drain needs time: `EXTEND_TIMEOUT_USEC` on `$NOTIFY_SOCKET`.

A runner's stop takes TRIMO_DRAIN_SECONDS and then the saves: the unit's `TimeoutStopSec`
need not follow every change of the drain, as the runner asks for what it needs when it
begins to drain (the unit sets `NotifyAccess=main`). Without systemd, nothing happens.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from typing import Final

log = logging.getLogger("trimo.runner")

SAVE_SECONDS: Final = 120.0
"""What stopping and saving the runs still going at the end of a drain may take."""


def notify(message: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Send `message` to the service manager; False without one (or when it cannot be told)."""
    path = environ.get("NOTIFY_SOCKET", "")
    if not path:
        return False
    address = "\0" + path[1:] if path.startswith("@") else path  # an abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        log.warning("could not tell systemd %r: %s", message, exc)
        return False
    return True


def extend_stop(drain_seconds: float, environ: Mapping[str, str] = os.environ) -> bool:
    """Ask for the drain's time and the saves' beyond it, counted from now."""
    microseconds = int((drain_seconds + SAVE_SECONDS) * 1_000_000)
    return notify(f"EXTEND_TIMEOUT_USEC={microseconds}", environ)
