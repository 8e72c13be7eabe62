"""`trimo run --attempts N --agents a,b`: which attempts to run, each one's request, running
them at once through one engine, and each one's evidence for `runner.ranking`."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from pydantic import SecretStr

from runner.agents import get_adapter
from runner.contract import attempt_pipeline
from runner.engine import RunEngine, StopSignal
from runner.errors import TrimoError
from runner.job import Outcome, RunEvent, RunFinished, RunRequest
from runner.ranking import AttemptResult, cut_short

CAP_VARIABLE = "TRIMO_POLICY_MAX_ATTEMPTS"


def parse_agents(value: str) -> list[str]:
    """`--agents claude,codex`: the names in order."""
    names = [part.strip() for part in value.split(",")]
    if not all(names):
        raise TrimoError(
            f"--agents {value!r} has an empty name.",
            "give agent names separated by commas, like --agents claude,codex",
        )
    return names


def plan_agents(
    attempts: int | None, agents: Sequence[str], default_agent: str, configured: int, cap: int
) -> list[str]:
    """Each attempt's agent, in order: `attempts` of each of `agents` (one each when
    `attempts` is not given), else `attempts` (or the repository's `attempts:`) of
    `default_agent`; TrimoError when that is more than `cap`."""
    if attempts is not None and attempts < 1:
        raise TrimoError(f"--attempts {attempts} is not a number of attempts.", "give 1 or more")
    if agents:
        planned = [name for name in agents for _ in range(attempts or 1)]
    else:
        planned = [default_agent] * (attempts or configured)
    for name in dict.fromkeys(planned):
        get_adapter(name)
    if len(planned) > cap:
        asked = f" ({len(agents)} agents × {attempts or 1})" if agents else ""
        raise TrimoError(
            f"{len(planned)} attempts{asked} is more than this machine's cap of {cap} "
            f"attempts at once ({CAP_VARIABLE}).",
            f"ask for at most {cap}, or raise {CAP_VARIABLE}",
        )
    return planned


def attempt_request(
    base: RunRequest,
    number: int,
    agent: str,
    branch: str,
    request_id: str,
    secrets: dict[str, SecretStr],
) -> RunRequest:
    """Attempt `number` of `base`'s pipeline: its own run, workspace (`<pipeline>.a<N>`) and
    `branch`, started from the pipeline branch's head, with `agent` and its credentials."""
    return base.model_copy(
        update={
            "run_id": request_id,
            "pipeline": attempt_pipeline(base.pipeline, number),
            "branch": branch,
            "from_branch": base.branch,
            "agent": agent,
            "secrets": secrets,
        }
    )


@dataclass(frozen=True)
class Ended:
    """How one attempt ended, and how long it took (seconds, from the start of all)."""

    number: int
    finished: RunFinished
    seconds: float


def run_all(
    engine: RunEngine,
    requests: dict[int, RunRequest],
    on_event: Callable[[int, RunEvent], None],
    stop: StopSignal,
    on_tick: Callable[[], None] = lambda: None,
    tick_seconds: float = 0.5,
) -> list[Ended]:
    """Every request run to its end at once, each in a thread of its own; `on_event` gets
    each attempt's events, `on_tick` is called every `tick_seconds` while they run. One
    `stop` stops them all (each saves its work)."""
    started = time.monotonic()
    ended: dict[int, Ended] = {}

    def one(number: int, request: RunRequest) -> None:
        finished = engine.execute(request, lambda event: on_event(number, event), stop)
        ended[number] = Ended(number, finished, time.monotonic() - started)

    with ThreadPoolExecutor(max_workers=len(requests), thread_name_prefix="attempt") as pool:
        futures: dict[Future[None], int] = {
            pool.submit(one, number, request): number for number, request in requests.items()
        }
        pending = set(futures)
        while pending:
            _, pending = wait(pending, timeout=tick_seconds)
            on_tick()
    for future, number in futures.items():
        if number not in ended:  # the engine promises an end; a thread that broke gets one
            problem = future.exception()
            finished = RunFinished(
                run_id=requests[number].run_id,
                outcome=Outcome.ERROR,
                reason=f"the attempt broke inside Trimo: {type(problem).__name__}",
            )
            ended[number] = Ended(number, finished, time.monotonic() - started)
    return [ended[number] for number in requests]


def result_of(ended: Ended, agent: str) -> AttemptResult:
    """One attempt's evidence for `runner.ranking`, as the App reads it from a run's end (a
    run whose checks failed ends as a failure, ranked on that evidence)."""
    finished = ended.finished
    report = finished.verify
    usage = finished.usage
    checks = report.checks if report is not None else []
    return AttemptResult(
        number=ended.number,
        agent=agent,
        outcome=finished.outcome,
        reason=finished.reason,
        verified=report.passed if report is not None and checks else None,
        checks_passed=sum(1 for check in checks if check.passed),
        checks_failed=sum(1 for check in checks if not check.passed),
        commits=len(finished.commits),
        files_changed=len(finished.diff.files) + finished.diff.unlisted,
        lines_changed=finished.diff.added + finished.diff.removed,
        cost_usd=usage.cost_usd if usage is not None else None,
        tokens=usage.input_tokens + usage.output_tokens if usage is not None else 0,
        seconds=round(ended.seconds, 1),
        last_word=cut_short(finished.last_word),
        head_sha=finished.head_sha if finished.commits else None,
    )
