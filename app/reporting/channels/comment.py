"""The progress comment channel: the run's note on its thread, and a discovery's plan.

Its last word names the pipeline's pull request, or why GitHub would not open one; when
that changes after the last word, the note is edited again."""

from __future__ import annotations

import logging

from githubkit.exception import RequestFailed

from app.reporting import runview
from app.reporting.budget import Priority
from app.reporting.channels.checkrun import check_url
from app.reporting.channels.pullrequest import PULL_PROBLEM, pull_of_pipeline
from app.reporting.channels.steps import Steps, Target, Unsettled, all_of, timed
from app.services import Services
from runner.job import Outcome, RunFinished

log = logging.getLogger("trimo.reporter")


class ProgressComment:
    """Writes the run's progress comment (and a discovery's plan comment)."""

    def __init__(self, services: Services, steps: Steps) -> None:
        self.services = services
        self.steps = steps

    async def catch_up(self, t: Target) -> None:
        """Say what the run is now: running, or its last word (once no late write may undo
        it), with its pull request as far as that is known."""
        event = t.view.finished
        if event is None:
            await self.started(t)
            return
        await self.steps.wait_out_late_writes(t.run.run_id, "comment")
        pull = await pull_of_pipeline(self.services.redis, t.pipeline)
        problem = await self.steps.flag(t.run.run_id, PULL_PROBLEM) or ""
        await self.finished(t, event, pull, problem)

    async def started(self, t: Target) -> None:
        body = runview.progress_running(t.view, t.pipeline.branch, check_url(t.pipeline, t.run))
        await self.steps.once(
            t.pipeline, t.run, "comment", "first:progress", Priority.FIRST,
            lambda: self.edit(t, body, Priority.FIRST),
        )  # fmt: skip

    async def finished(self, t: Target, event: RunFinished, pull: int | None, problem: str) -> None:
        """The last word on the thread; a discovery that answered posts its plan too."""
        url = check_url(t.pipeline, t.run)
        body = runview.progress_finished(t.view, t.pipeline.branch, url, pull, problem, t.run.mode)
        said = f"final:progress:{pull or ''}:{bool(problem)}"  # said again when they change
        steps = [
            self.steps.once(
                t.pipeline, t.run, "comment", said, Priority.FINAL,
                lambda: self.edit(t, body, Priority.FINAL),
            )
        ]  # fmt: skip
        answered = event.outcome is Outcome.SUCCESS or event.plan.strip()
        thread = t.run.thread
        if t.run.mode == "discover" and answered and thread:  # thread 0: the dashboard's
            plan = runview.plan_comment(t.view, t.pipeline, t.run, url)
            steps.append(
                self.steps.once(
                    t.pipeline, t.run, "comment", "final:plan", Priority.FINAL,
                    lambda: t.api.comment(thread, plan),
                )
            )  # fmt: skip
        await all_of(*steps)

    async def edit(self, t: Target, body: str, priority: Priority) -> None:
        """Edit the progress comment; when it was deleted, post a new one."""
        api, run = t.api, t.run
        if run.progress_comment_id is None:
            return
        try:
            await api.update_comment(run.progress_comment_id, body)
            return
        except RequestFailed as exc:
            if exc.response.status_code != 404:
                raise
            if await timed(api.comment_exists(run.progress_comment_id)):
                raise Unsettled(
                    f"progress comment {run.progress_comment_id}: 404, yet there"
                ) from exc
        log.info("run %s: the progress comment was deleted; posting a new one", run.run_id)
        await self.steps.spend(t.pipeline, priority)
        comment_id = await timed(api.comment(run.thread, body))
        await self.services.pipelines.attach(run.run_id, progress_comment_id=comment_id)
        run.progress_comment_id = comment_id
