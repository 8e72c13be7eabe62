"""`verify:` in `.github/trimo.yml`, through policy and dispatch to the job contract."""

from __future__ import annotations

import pytest

from app.conversation.commands import RunCommand
from app.conversation.policy import Refusal, RunSettings, ServerPolicy, effective_run
from app.conversation.repoconfig import ConfigError, parse_repo_config
from app.runs.dispatch import run_request
from app.runs.pipelines import Pipeline, PipelineRun
from app.runs.summary import summarise
from runner.job import (
    CheckResult,
    Outcome,
    RunFinished,
    RunRequest,
    VerifyCheck,
    VerifyReport,
    checks_failing_reason,
)

CONFIG = """
verify:
  - name: tests
    run: npm test
  - name: lint
    run: npm run lint
verify_timeout_minutes: 5
verify_fix_attempts: 1
"""


def test_the_verify_section() -> None:
    config = parse_repo_config(CONFIG)
    assert config.verify == [
        VerifyCheck(name="tests", run="npm test"),
        VerifyCheck(name="lint", run="npm run lint"),
    ]
    assert (config.verify_timeout_minutes, config.verify_fix_attempts) == (5, 1)
    defaults = parse_repo_config("agent: claude")
    assert defaults.verify == [] and defaults.verify_timeout_minutes == 10
    assert defaults.verify_fix_attempts == 0


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("verify: npm test", "`verify` should be a list of checks"),
        ("verify: [{name: tests}]", "`verify.0.run` is missing"),
        ("verify: [{name: tests, run: ''}]", "`verify.0.run` should not be empty"),
        ("verify: [{name: tests, run: '   '}]", "`verify.0.run` should be a command"),
        ("verify: [{nmae: tests, run: x}]", "Did you mean `name`?"),
        ("verify: [{name: a, run: x}, {name: a, run: y}]", "two checks named 'a'"),
        ("verify: [{name: '$(id)', run: x}]", "`verify.0.name` should be up to 40 letters"),
        ("verify: [{name: ' tests', run: x}]", "`verify.0.name` should be up to 40 letters"),
        ("verify: [{name: tests, run: x, when: always}]", "Unknown setting `when`"),
        ("verify_timeout_minutes: 0", "`verify_timeout_minutes` should be greater"),
        ("verify_timeout_minutes: 121", "`verify_timeout_minutes` should be less"),
        ("verify_fix_attempts: 11", "`verify_fix_attempts` should be less"),
        ("verify_fix_attempts: yes", "`verify_fix_attempts` should be a whole number"),
    ],
)
def test_broken_verify_sections_say_what_to_fix(text: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_repo_config(text)
    assert says in caught.value.message


def test_too_many_checks() -> None:
    text = "verify:\n" + "".join(f"  - {{name: c{n}, run: 'true'}}\n" for n in range(11))
    with pytest.raises(ConfigError) as caught:
        parse_repo_config(text)
    assert "`verify` should have at most 10 entries" in caught.value.message


def test_checks_reach_the_runner_for_coding_runs_only() -> None:
    settings = effective_run(parse_repo_config(CONFIG), RunCommand(prompt="x"), ServerPolicy())
    assert isinstance(settings, RunSettings)
    pipeline = Pipeline(
        id="o-r-1", repo="o/r", number=1, kind="issue", branch="trimo/1-x",
        base_branch="main", clone_url="https://example.com/o/r.git", installation_id=1,
    )  # fmt: skip
    run = PipelineRun(run_id="o-r-1-a", prompt="x", settings=settings, requested_by="p", thread=1)
    request = RunRequest.model_validate(run_request(pipeline, run, "t").dump_for_queue())
    assert [c.name for c in request.verify] == ["tests", "lint"]
    assert request.verify_timeout_s == 300
    discover = run.model_copy(update={"mode": "discover"})
    assert run_request(pipeline, discover, "t").verify == []


def test_a_verify_timeout_past_the_servers_cap_is_refused() -> None:
    policy = ServerPolicy(max_timeout_minutes=3)
    config = parse_repo_config(CONFIG + "timeout_minutes: 3\n")
    refused = effective_run(config, RunCommand(prompt="x"), policy)
    assert isinstance(refused, Refusal) and "`verify_timeout_minutes`" in refused.message
    no_checks = parse_repo_config("verify_timeout_minutes: 5\ntimeout_minutes: 3")
    assert isinstance(effective_run(no_checks, RunCommand(prompt="x"), policy), RunSettings)


def test_the_pipeline_keeps_what_verify_said() -> None:
    settings = effective_run(parse_repo_config(CONFIG), RunCommand(prompt="x"), ServerPolicy())
    assert isinstance(settings, RunSettings)
    pipeline = Pipeline(
        id="o-r-1", repo="o/r", number=1, kind="issue", branch="trimo/1-x",
        base_branch="main", clone_url="https://example.com/o/r.git", installation_id=1,
    )  # fmt: skip
    pipeline.add(
        PipelineRun(run_id="o-r-1-a", prompt="x", settings=settings, requested_by="p", thread=1)
    )
    report = VerifyReport(
        sha="a" * 40,
        checks=[
            CheckResult(name="tests", passed=False, exit_code=1, log_tail="1 failed"),
            CheckResult(name="lint", passed=True, exit_code=0),
        ],
    )
    assert checks_failing_reason(report) == "checks failing: tests"
    pipeline.record_finish(
        RunFinished(
            run_id="o-r-1-a",
            outcome=Outcome.FAILURE,
            reason=checks_failing_reason(report),
            verify=report,
        )
    )
    brief = summarise(pipeline).run
    assert brief is not None and brief.verify == "checks failing"
    passed = report.model_copy(update={"checks": report.checks[1:]})
    pipeline.runs[0].verify = passed
    brief = summarise(pipeline).run
    assert brief is not None and brief.verify == "verified"
