"""check_run.requested_action (Stop / Retry buttons), check_run.rerequested (Re-run), and
check_suite.completed: failing checks on a Trimo branch start a run (`ci_failure`); so do
a run's failing checks of `verify:` (`trimo_verify.failed`, `verify_fix_attempts`)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final

from githubkit.exception import RequestFailed

from app.conversation.commands import RunCommand
from app.conversation.handlers.context import router
from app.conversation.naming import inline_code
from app.conversation.repoconfig import ConfigError
from app.conversation.thread import (
    Conversation,
    Source,
    authorise,
    config_and_role,
    load_config,
    open_conversation,
    report_config_error,
)
from app.edge.events import VERIFY_EVENT
from app.edge.payloads import CheckRunEvent, CheckSuiteEvent, RepoEvent
from app.github.client import is_transient
from app.reporting.channels.pullrequest import pull_of_pipeline
from app.runs.pipelines import Pipeline, PipelineRun
from app.runs.service import (
    ChecksFailed,
    accept_run,
    is_trimo_check,
    retry_run,
    run_settings,
    stop_run,
)
from app.services import Delivery
from runner.contract import RunMode
from runner.job import FailingCheck, Outcome, VerifyReport
from runner.printable import printable
from runner.templating import render

log = logging.getLogger("trimo.app")

FAILED: Final = frozenset({"failure", "timed_out", "startup_failure"})
"""Check conclusions that count as failing."""
MAX_FAILING_CHECKS: Final = 10
MAX_CHECK_SUMMARY: Final = 4_000
"""Of each failing check's summary, the most given to the agent."""

Button = Callable[[Conversation, Pipeline, PipelineRun], Awaitable[None]]


async def _stop(conv: Conversation, pipeline: Pipeline, run: PipelineRun) -> None:
    await stop_run(conv, pipeline, run)


async def _retry(conv: Conversation, pipeline: Pipeline, run: PipelineRun) -> None:
    config = await load_config(conv.api, conv.thread.repo.default_branch)
    if isinstance(config, ConfigError):
        await report_config_error(conv, config)
        return
    await retry_run(conv, config, pipeline, run)


BUTTONS: dict[str, Button] = {"stop": _stop, "retry": _retry}
"""Check-run action identifiers and what they do."""


@router.on("check_run", "requested_action")
async def check_run_action(delivery: Delivery) -> None:
    event = delivery.parse(CheckRunEvent)
    action = event.requested_action
    button = BUTTONS.get(action.identifier) if action else None
    if button is not None:
        await _press(delivery, event, button)


@router.on("check_run", "rerequested")
async def check_run_rerequested(delivery: Delivery) -> None:
    await _press(delivery, delivery.parse(CheckRunEvent), _retry)


async def _press(delivery: Delivery, event: CheckRunEvent, button: Button) -> None:
    """Find the run behind the check run, authorise the sender, then press `button`."""
    app_id = delivery.services.settings.github_app_id
    check = event.check_run
    if check.app is not None and app_id is not None and check.app.id != app_id:
        return
    if event.sender.is_bot or not check.external_id:
        return
    found = await delivery.services.pipelines.get_run(check.external_id)
    if found is None:
        return
    pipeline, run = found
    conv = await open_conversation(
        delivery,
        event,
        Source(user=event.sender.login),
        number=run.thread,
        is_pull=pipeline.kind == "pull" or run.thread != pipeline.number,
        state="closed" if pipeline.closed else "open",
    )
    if conv is None:
        return
    config, role = await config_and_role(conv)
    if await authorise(conv, config, role):
        await button(conv, pipeline, run)


@router.on("check_suite", "completed")
async def check_suite_completed(delivery: Delivery) -> None:
    """Checks failed on a Trimo branch: start a discovery or fixing run, per `ci_failure`."""
    event = delivery.parse(CheckSuiteEvent)
    suite = event.check_suite
    app_id = delivery.services.settings.github_app_id
    if suite.conclusion not in FAILED or not suite.head_branch or not suite.head_sha:
        return
    if suite.app is not None and app_id is not None and suite.app.id == app_id:
        return  # Trimo's own check runs: a failed run is reported already
    repo = event.repository.full_name
    pipeline = await delivery.services.pipelines.find_by_branch(repo, suite.head_branch)
    if pipeline is None or pipeline.kind == "pull" or pipeline.closed:
        return  # only the branches Trimo made for its own pipelines
    if pipeline.active_run is not None or pipeline.waiting():
        return  # a run is going: its own pushes get checked again
    if pipeline.answered_checks_on(suite.head_sha):
        return
    number = await _thread_of(delivery, pipeline)
    if not number:
        return
    last = pipeline.last_run()
    conv = await open_conversation(
        delivery,
        event,
        Source(user=last.requested_by if last else ""),
        number=number,
        is_pull=pipeline.kind != "issue",
    )
    if conv is None:
        return
    await answer_failing_checks(conv, pipeline, suite.id, suite.head_sha)


async def _thread_of(delivery: Delivery, pipeline: Pipeline) -> int | None:
    """Where a pipeline's automatic runs are told: an issue's pipeline on the issue, a pull
    request's on it, one started from the dashboard on its pull request (once open)."""
    if pipeline.kind == "issue":
        return pipeline.number
    return await pull_of_pipeline(delivery.services.redis, pipeline)


async def answer_failing_checks(
    conv: Conversation, pipeline: Pipeline, suite_id: int, sha: str
) -> None:
    """Start the run `ci_failure` asks for, at most `ci_failure_attempts` in a row."""
    config = await load_config(conv.api, conv.thread.repo.default_branch)
    if isinstance(config, ConfigError) or config.ci_failure == "off":
        return
    attempt = pipeline.automatic_runs + 1
    if attempt > config.ci_failure_attempts:
        log.info("%s: checks failed on %s; automatic runs used up", pipeline.id, sha[:7])
        return
    if await conv.api.branch_head(pipeline.branch) != sha:
        return  # the branch moved on: its newer commit gets checked
    try:
        suite_runs = await conv.api.suite_check_runs(suite_id)
    except RequestFailed as exc:
        if is_transient(exc):
            raise
        log.warning("%s: check suite %s unreadable (%s)", pipeline.id, suite_id, exc)
        return
    failing = [
        FailingCheck(
            name=printable(run.name, 200, one_line=True),
            conclusion=printable(run.conclusion, 40, one_line=True),
            title=printable(run.output.title, 300, one_line=True),
            summary=printable(run.output.summary, MAX_CHECK_SUMMARY).strip(),
        )
        for run in suite_runs
        if run.conclusion in FAILED and not is_trimo_check(run.name)
    ][:MAX_FAILING_CHECKS]
    if not failing:
        return
    mode: RunMode = "discover" if config.ci_failure == "discover" else "code"
    command = RunCommand(prompt="", mode=mode)
    settings = await run_settings(conv, config, command)
    if settings is None:
        return
    prompt = render(
        "ci_failure_request.md.j2",
        mode=mode,
        branch=pipeline.branch,
        checks=[check.name for check in failing],
    ).strip()
    await conv.reply(
        "ci_failure_run.md.j2",
        mode=mode,
        sha=inline_code(sha[:7]),
        branch=inline_code(pipeline.branch),
        checks=[inline_code(f"{check.name}: {check.conclusion}", 80) for check in failing],
        attempt=attempt,
        attempts=config.ci_failure_attempts,
    )
    await accept_run(
        conv, pipeline, prompt, settings, sha, mode=mode, checks_failed=ChecksFailed(sha, failing)
    )


class VerifyFailedEvent(RepoEvent):
    """What the reporter queues when a run's checks of `verify:` failed."""

    run_id: str


@router.on(VERIFY_EVENT, "failed")
async def verify_failed(delivery: Delivery) -> None:
    """A run's checks failed: give them back to the agent, per `verify_fix_attempts`."""
    event = delivery.parse(VerifyFailedEvent)
    found = await delivery.services.pipelines.get_run(event.run_id)
    if found is None:
        return
    pipeline, run = found
    report = run.verify
    if report is None or report.passed or pipeline.closed or run.outcome is Outcome.CANCELLED:
        return
    last = pipeline.last_run()
    if last is None or last.run_id != run.run_id:
        return  # someone asked for another run meanwhile (runs keep their order): it goes
    number = await _thread_of(delivery, pipeline)
    if not number:
        return
    api = await delivery.services.github.repo(pipeline.installation_id, pipeline.repo)
    info = await api.repository()
    repository = event.repository.model_copy(update={"default_branch": info.default_branch})
    conv = await open_conversation(
        delivery,
        event.model_copy(update={"repository": repository}),
        Source(user=run.requested_by),
        number=number,
        is_pull=pipeline.kind != "issue",
    )
    if conv is not None:
        await answer_failing_verify(conv, pipeline, run, report)


async def answer_failing_verify(
    conv: Conversation, pipeline: Pipeline, run: PipelineRun, report: VerifyReport
) -> None:
    """Start a fixing run with the failing checks' output, at most `verify_fix_attempts` in
    a row (automatic runs, whether verify or `ci_failure` started them; a person's request
    starts the count again)."""
    config = await load_config(conv.api, conv.thread.repo.default_branch)
    if isinstance(config, ConfigError) or config.verify_fix_attempts == 0:
        return
    attempt = pipeline.automatic_runs + 1
    if attempt > config.verify_fix_attempts:
        log.info("%s: checks of run %s failed; automatic runs used up", pipeline.id, run.run_id)
        return
    failing = [
        FailingCheck(
            name=check.name,
            conclusion="timed out" if check.timed_out else "failed",
            title=check.problem or f"exit code {check.exit_code}",
            summary=check.log_tail[-MAX_CHECK_SUMMARY:],
            verify=True,
        )
        for check in report.checks
        if not check.passed
    ][:MAX_FAILING_CHECKS]
    settings = await run_settings(conv, config, RunCommand(prompt="", agent=run.agent))
    if settings is None:
        return
    names = [check.name for check in failing]
    prompt = render("verify_fix_request.md.j2", branch=pipeline.branch, checks=names).strip()
    await conv.reply(
        "verify_fix_run.md.j2",
        run_id=inline_code(run.run_id),
        sha=inline_code(report.sha[:7]),
        checks=[inline_code(name) for name in names],
        attempt=attempt,
        attempts=config.verify_fix_attempts,
    )
    checks_failed = ChecksFailed(report.sha, failing)
    await accept_run(conv, pipeline, prompt, settings, report.sha, checks_failed=checks_failed)
