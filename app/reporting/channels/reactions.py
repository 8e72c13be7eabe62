"""The reactions channel: 🚀 on what asked for the run, once it starts."""

from __future__ import annotations

from app.github.client import ReactionTarget
from app.reporting.budget import Priority
from app.reporting.channels.steps import Steps, Target


class Reactions:
    """Marks the comment (or issue) that asked for a run."""

    def __init__(self, steps: Steps) -> None:
        self.steps = steps

    async def catch_up(self, t: Target) -> None:
        target: ReactionTarget = "issue"
        target_id = t.run.thread
        if t.run.comment_id is not None and t.run.comment_kind is not None:
            target, target_id = t.run.comment_kind, t.run.comment_id

        async def rocket() -> None:
            if target_id:  # a run asked from the dashboard with no thread has nothing to mark
                await t.api.react(target, target_id, "rocket")

        await self.steps.once(t.pipeline, t.run, "reactions", "first:react", Priority.FIRST, rocket)
