"""Kept commits replayed on a branch that moved on, inside a sandbox.

The kept commits are the agent's work, so git never merges them on the host. The
host makes a repository for the replay alone from its mirror (the branch's new
head and the kept commits, nothing else), and a helper container (the run's image,
no network, no home, the agent's uid and limits) rebases them there with
`sandbox/runtime/trimo-replay`. What comes back is a bundle, taken like any
hand-over (`runner.handoff`): opened without following links, capped, verified and
fetched with fsck, and only then, if it builds on the new head, the pipeline's.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import requests

from runner import gitops, handoff
from runner.container import (
    CONTEXT_MOUNT,
    EXPORT_SECONDS,
    LABEL_PIPELINE,
    LABEL_RUN,
    LABEL_RUNNER,
    OUT_MOUNT,
    ContainerSpec,
    run_helper,
)
from runner.errors import HandoffRefused, TrimoError
from runner.job import RunRequest
from runner.pipelinedir import PipelineDir

log = logging.getLogger(__name__)

SCRIPT = Path(__file__).resolve().parent.parent / "sandbox" / "runtime" / "trimo-replay"
BUNDLE_NAME = "replay.bundle"
HEAD_NAME = f"{BUNDLE_NAME}.head"
MAX_ANSWER_BYTES = 4096


class ReplayFailed(TrimoError):
    """The replay could not be made (not a conflict: the sandbox or the hand-over failed)."""


@dataclass(frozen=True)
class Replayer:
    """Replays one pipeline's kept commits, on this runner's Docker and mirror."""

    client: docker.DockerClient
    request: RunRequest
    mirror: Path
    root: Path
    """The pipeline's disk: the replay's repository and /trimo are made there."""
    pipeline: PipelineDir
    user: str
    owner: int | None
    runner_id: str
    limits: handoff.Limits

    def replay(self, onto_branch: str, upstream: str, kept_ref: str, into: str) -> str | None:
        """Replay `upstream..<kept_ref>` on the head of `onto_branch` and point `into` at the
        result: the new head (the branch's own head when nothing is left to add), or None
        when the commits conflict with it. ReplayFailed when it could not be tried."""
        onto = gitops.branch_sha(self.mirror, onto_branch)
        head = gitops.resolve(self.mirror, kept_ref)
        if onto is None or head is None:
            raise ReplayFailed("the branch or the kept commits are missing from the mirror")
        name = f"replay-{self.request.run_id}"
        work, io = self.root / name, self.root / "io" / name
        out = io / "out"
        try:
            gitops.remove_tree(work)
            gitops.remove_tree(io)
            gitops.create_workspace(work, self.mirror, [onto_branch], self.owner, (kept_ref,))
            out.mkdir(parents=True, mode=0o700)
            io.chmod(0o755)
            if self.owner is not None:
                gitops.chown_tree(out, self.owner)
            script = io / SCRIPT.name
            script.write_bytes(SCRIPT.read_bytes())
            script.chmod(0o644)
            self._run(work, io, out, onto, upstream, head)
            return self._take(out, onto, upstream, into)
        except (docker.errors.DockerException, requests.RequestException) as exc:
            raise ReplayFailed(f"its sandbox could not run ({type(exc).__name__})") from exc
        except HandoffRefused as exc:
            raise ReplayFailed(exc.message) from exc
        finally:
            gitops.remove_tree(work)
            gitops.remove_tree(io)

    def _run(self, work: Path, io: Path, out: Path, onto: str, upstream: str, head: str) -> None:
        request = self.request
        spec = ContainerSpec(
            image=request.image,
            command=[],
            workspace=work,
            context_dir=io,
            out_dir=out,
            home=None,
            user=self.user,
            network="none",
            resources=request.resources,
            labels={
                LABEL_RUNNER: self.runner_id,
                LABEL_RUN: request.run_id,
                LABEL_PIPELINE: request.pipeline,
            },
            name=f"trimo-{request.run_id}-{secrets.token_hex(3)}",
        )
        command = [
            "timeout", str(EXPORT_SECONDS), "bash", f"{CONTEXT_MOUNT}/{SCRIPT.name}",
            f"{OUT_MOUNT}/{BUNDLE_NAME}", onto, upstream, head,
        ]  # fmt: skip
        run_helper(self.client, spec, command)

    def _take(self, out: Path, onto: str, upstream: str, into: str) -> str | None:
        incoming = self.pipeline.incoming / f"{self.request.run_id}.replay"
        try:
            if not handoff.take_file(out, HEAD_NAME, incoming, MAX_ANSWER_BYTES):
                raise ReplayFailed("its sandbox gave no answer")
            answer = incoming.read_text(errors="replace").split()
            if answer == ["conflict"]:
                return None
            if len(answer) != 2 or answer[0] != "head" or not gitops.SHA_RE.match(answer[1]):
                raise ReplayFailed("git could not replay them in the sandbox")
            if answer[1] == onto:
                return onto
            if not handoff.take_file(out, BUNDLE_NAME, incoming, self.limits.bundle_bytes):
                raise ReplayFailed("its sandbox handed over no commits")
            landing = f"refs/trimo/replayed/{self.request.pipeline}"
            head, _ = handoff.import_bundle(
                self.mirror, incoming, landing, [onto, upstream], self.limits
            )
            gitops.git(self.mirror, "update-ref", "-d", landing)
            if head != answer[1] or not gitops.is_ancestor(self.mirror, onto, head):
                raise ReplayFailed(
                    "its sandbox handed over commits that do not build on the branch"
                )
            gitops.git(self.mirror, "update-ref", into, head)
            return head
        finally:
            incoming.unlink(missing_ok=True)
