"""The check run channel: the run's state on its commit, live while it goes, then its end."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Final

from githubkit.exception import RequestFailed

from app.github.client import CheckAction, failure_detail, is_transient
from app.reporting import runview
from app.reporting.budget import Priority
from app.reporting.channels.steps import (
    OverBudget,
    Steps,
    Target,
    Unsettled,
    describe,
    timed,
)
from app.runs.pipelines import Pipeline, PipelineRun
from app.runs.service import RETRY_ACTION, STOP_ACTION, check_name
from app.services import Services
from runner.job import RunFinished

log = logging.getLogger("trimo.reporter")

CHECK_OFF_FLAG: Final = "flag:check-off"


def check_url(pipeline: Pipeline, run: PipelineRun) -> str:
    if run.check_run_id is None:
        return ""
    return f"{runview.html_url(pipeline.clone_url)}/runs/{run.check_run_id}"


class CheckRun:
    """Writes the run's check run."""

    def __init__(self, services: Services, steps: Steps) -> None:
        self.services = services
        self.steps = steps

    async def started(self, t: Target) -> None:
        """In progress, with Stop."""
        title, summary = runview.check_running(t.view, t.pipeline.branch, datetime.now(UTC))
        await self.steps.once(
            t.pipeline, t.run, "check", "first:check", Priority.FIRST,
            lambda: self.edit(t, title, summary, [STOP_ACTION], None, Priority.FIRST),
        )  # fmt: skip

    async def live(self, t: Target) -> None:
        """The latest state of a running run (the budget was spent by the caller)."""
        title, summary = runview.check_running(t.view, t.pipeline.branch, datetime.now(UTC))
        await self.steps.unsure_if_unanswered(
            t.run.run_id,
            self.edit(t, title, summary, [STOP_ACTION], None, Priority.LIVE),
            "check",
        )

    async def finished(self, t: Target, event: RunFinished) -> None:
        """Completed with the run's conclusion, with Retry."""
        title, summary = runview.check_finished(t.view, t.pipeline.branch, t.run.mode)
        await self.steps.once(
            t.pipeline, t.run, "check", "final:check", Priority.FINAL,
            lambda: self.edit(
                t, title, summary, [RETRY_ACTION],
                runview.conclusion_of(event, t.run.mode), Priority.FINAL,
            ),
        )  # fmt: skip

    async def again(self, t: Target, event: RunFinished) -> None:
        """The end once more, for a live update that may have landed after it."""
        title, summary = runview.check_finished(t.view, t.pipeline.branch, t.run.mode)
        conclusion = runview.conclusion_of(event, t.run.mode)
        await self.steps.spend(t.pipeline, Priority.FINAL)
        await self.steps.unsure_if_unanswered(
            t.run.run_id,
            self.edit(t, title, summary, [RETRY_ACTION], conclusion, Priority.FINAL),
            "check",
        )

    async def end_anyway(self, t: Target, event: RunFinished) -> None:
        """The run's thread is gone, but its check run lives on the commit: end it, best
        effort, so it does not show as running for ever."""
        title, summary = runview.check_finished(t.view, t.pipeline.branch, t.run.mode)
        try:
            await self.steps.once(
                t.pipeline, t.run, "check", "final:check", Priority.FINAL,
                lambda: self.edit(
                    t, title, summary, [], runview.conclusion_of(event, t.run.mode),
                    Priority.FINAL,
                ),
            )  # fmt: skip
        except OverBudget:
            raise
        except Exception as exc:
            log.warning("run %s: its check run could not be ended: %s", t.run.run_id, describe(exc))

    async def edit(
        self,
        t: Target,
        title: str,
        summary: str,
        actions: list[CheckAction],
        conclusion: runview.CheckConclusion | None,
        priority: Priority,
    ) -> None:
        """Update the check run; make a new one when it is gone, carry on without if refused."""
        api, run = t.api, t.run
        off = await self.steps.flag(run.run_id, CHECK_OFF_FLAG)
        if run.check_run_id is None or off is not None:
            return
        try:
            await api.update_check_run(
                run.check_run_id, title=title, summary=summary, actions=actions,
                conclusion=conclusion,
            )  # fmt: skip
            return
        except RequestFailed as exc:
            if is_transient(exc):
                raise
            gone = exc.response.status_code == 404
            detail = failure_detail(exc)
            if gone and await timed(api.check_run_exists(run.check_run_id)):
                raise Unsettled(f"check run {run.check_run_id}: 404, yet there") from exc
        sha = t.view.head_sha or t.view.base_sha
        if gone and sha is not None:
            log.info("run %s: check run %s is gone; making a new one", run.run_id, run.check_run_id)
            await self.steps.spend(t.pipeline, priority)
            try:
                check_id = await timed(
                    api.create_check_run(
                        name=check_name(run), head_sha=sha, external_id=run.run_id,
                        title=title, summary=summary, actions=actions,
                    )
                )  # fmt: skip
            except RequestFailed as again:
                if is_transient(again):
                    raise
                detail = failure_detail(again)
            else:
                await self.services.pipelines.attach(run.run_id, check_run_id=check_id)
                run.check_run_id = check_id
                await self.steps.spend(t.pipeline, priority)
                await timed(
                    api.update_check_run(
                        check_id, title=title, summary=summary, actions=actions,
                        conclusion=conclusion,
                    )
                )  # fmt: skip
                return
        # Refused (no `checks: write` any more) or nothing to hang it on: comments carry on.
        log.warning("run %s: no check run from now on (%s)", run.run_id, detail)
        await self.steps.set_flag(run.run_id, CHECK_OFF_FLAG, detail)
