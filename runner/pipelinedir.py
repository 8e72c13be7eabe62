"""A pipeline's place on the runner: its disk, workspace, home and the host's notes.

    <cache>/pipelines/<repo key>/<pipeline>/     host only (0700)
        disk.img, root/                          the pipeline's filesystem (runner.disk)
            workspace/  home/                    the agent's (mounted into its container)
            io/<run>/                            /trimo (read-only) for one run
                out/                             /trimo/out, where the sandbox leaves bundles
            replay-<run>/  io/replay-<run>/      a replay of kept commits (runner.replay)
        state.json                               the host's notes: commits the workspace has,
                                                 what each agent's session had cost
        incoming/                                host only: bundles taken from out/

Only `workspace`, `home`, `io/<run>/out` and a replay's directories are ever
written in a sandbox; the host reads nothing from them but a bundle
(`runner.handoff`).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner import disk, gitops
from runner.errors import TrimoError

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
MAX_KNOWN = 6


@dataclass(frozen=True)
class PipelineDir:
    path: Path

    @classmethod
    def of(cls, cache_dir: Path, clone_url: str, pipeline: str) -> PipelineDir:
        return cls(cache_dir / "pipelines" / gitops.repo_key(clone_url) / pipeline)

    @property
    def lock(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    @property
    def incoming(self) -> Path:
        return self.path / "incoming"

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.path.chmod(0o700)
        self.incoming.mkdir(exist_ok=True, mode=0o700)

    def _state(self) -> dict[str, Any]:
        try:
            data = json.loads((self.path / STATE_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save(self, state: dict[str, Any]) -> None:
        tmp = self.path / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(state | {"used": time.time()}))
        tmp.replace(self.path / STATE_FILE)

    def known(self) -> list[str]:
        """Commits the workspace is known to hold (the host's own notes, not the agent's)."""
        found = self._state().get("known", [])
        found = found if isinstance(found, list) else []
        return [sha for sha in found if isinstance(sha, str) and gitops.SHA_RE.match(sha)]

    def remember(self, *shas: str | None) -> None:
        known = list(dict.fromkeys([s for s in shas if s] + self.known()))[:MAX_KNOWN]
        self._save(self._state() | {"known": known})

    def session_cost(self, agent: str) -> float:
        """What `agent`'s session in this home had cost after its last run here, as the host
        noted it from the run's own output (never from the agent's files); 0 with no note."""
        sessions = self._state().get("sessions")
        cost = sessions.get(agent) if isinstance(sessions, dict) else None
        if isinstance(cost, int | float) and not isinstance(cost, bool) and 0 <= cost < 1e9:
            return float(cost)
        return 0.0

    def note_session_cost(self, agent: str, cost: float) -> None:
        state = self._state()
        sessions = state.get("sessions")
        sessions = sessions if isinstance(sessions, dict) else {}
        self._save(state | {"sessions": sessions | {agent: cost}})

    def forget_workspace(self) -> None:
        (self.path / STATE_FILE).unlink(missing_ok=True)

    def last_used(self) -> float:
        try:
            return (self.path / STATE_FILE).stat().st_mtime
        except OSError:
            return self.path.stat().st_mtime


def sweep(cache_dir: Path, ttl_days: float, now: float | None = None) -> list[Path]:
    """Delete pipelines (workspace, home, disk) unused for `ttl_days`; returns what went.

    A pipeline in use is skipped: its lock is held by the run."""
    removed: list[Path] = []
    limit = (now or time.time()) - ttl_days * 86400
    for state in sorted((cache_dir / "pipelines").glob(f"*/*/{STATE_FILE}")):
        pipeline = PipelineDir(state.parent)
        try:
            if pipeline.last_used() <= limit and remove_when_idle(pipeline):
                removed.append(pipeline.path)
        except (OSError, TrimoError) as exc:  # one pipeline never stops the sweep of others
            log.error("could not remove pipeline %s: %s", pipeline.path, exc)
    return removed


def remove_when_idle(pipeline: PipelineDir) -> bool:
    """Remove the pipeline unless one of its runs holds it now (a later sweep retries)."""
    if not pipeline.path.exists():
        return False
    with pipeline.lock.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        remove(pipeline)
    return True


def remove(pipeline: PipelineDir) -> None:
    """Unmount and delete a pipeline's directory, never following a link in it."""
    root = pipeline.path / disk.ROOT_NAME
    if os.path.ismount(root):
        disk.unmount(root)
    gitops.remove_tree(pipeline.path)
    log.info("removed pipeline directory %s", pipeline.path)
