"""The runner's commands: `trimo run`, `trimo pipelines`, `trimo image`, `trimo runner`, and
`trimo doctor`'s checks of this machine."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from secrets import token_hex as secrets_token
from typing import Annotated

import docker
import docker.errors
import typer
from rich.console import Console
from rich.text import Text

from runner import disk, dockerclient, doctor, gitops, images, install, localpick, localstate
from runner.agents import ADAPTERS
from runner.attemptconfig import local_attempts_config
from runner.attemptview import Progress, prefixed, show_attempts
from runner.contract import DEFAULT_VERIFY_TIMEOUT_SECONDS, NETWORK_MODES, NetworkMode
from runner.engine import RunEngine, StopSignal
from runner.errors import TrimoError
from runner.job import (
    EgressBlocked,
    Outcome,
    RepoRef,
    Resources,
    RunEvent,
    RunFinished,
    RunRecord,
    RunRequest,
)
from runner.localattempts import attempt_request, parse_agents, plan_agents, result_of, run_all
from runner.network import firewall
from runner.network.hosts import clean_hosts, outside_caps
from runner.network.proxyimage import PROXY_IMAGE
from runner.ranking import AttemptResult, PickMode, RankKey, auto_pick, rank
from runner.settings import RunnerSettings
from runner.setup import layers
from runner.setup.local import local_setup
from runner.terminal import OUTCOME_STYLE, event_line, print_plan, print_summary, safe
from runner.verify import local_checks

console = Console(stderr=True)
image_app = typer.Typer(help="Build and inspect the agent image.", no_args_is_help=True)


def fail(error: TrimoError) -> typer.Exit:
    """Print a TrimoError the way a person wants to read it, and exit non-zero."""
    console.print(Text.assemble(("error:", "bold red"), f" {error.message}"))
    if error.hint:
        console.print(Text.assemble("  ", ("→", "yellow"), f" {error.hint}"))
    return typer.Exit(1)


@image_app.command("build")
def image_build(
    tag: Annotated[str, typer.Option(help="Image tag to build.")] = "trimo-agent:latest",
    target: Annotated[
        str, typer.Option(help="Dockerfile target: `agent` (full) or `base` (script agent only).")
    ] = "agent",
    ca_cert: Annotated[
        list[Path] | None,
        typer.Option(help="Extra CA certificate (PEM) to trust inside the image; repeatable."),
    ] = None,
    host_cas: Annotated[
        bool,
        typer.Option(help="Also trust the CAs this host added (/usr/local/share/ca-certificates)."),
    ] = True,
    quiet: Annotated[bool, typer.Option(help="Only print the result.")] = False,
    verbose: Annotated[bool, typer.Option(help="Show every line of build output.")] = False,
) -> None:
    """Build the agent image from sandbox/Dockerfile."""
    certs = list(ca_cert or [])
    if host_cas:
        certs += images.host_extra_cas()
    try:
        client = dockerclient.connect()
        if quiet:
            image_id = images.build_image(client, tag, target=target, ca_certs=certs)
        else:
            with console.status(f"building {tag} (target {target})…") as status:

                def show(line: str) -> None:
                    if line.startswith("Step "):
                        status.update(f"building {tag}: {line[:100]}")
                        console.print(f"[dim]{line[:120]}[/]", highlight=False)
                    elif verbose:
                        console.print(f"[dim]{line[:200]}[/]", highlight=False)

                image_id = images.build_image(
                    client, tag, target=target, ca_certs=certs, on_line=show
                )
    except TrimoError as exc:
        raise fail(exc) from exc
    console.print(f"[green]built[/] {tag} {image_id[:19]}")


EXIT_CODES = {
    Outcome.SUCCESS: 0,
    Outcome.FAILURE: 1,
    Outcome.ERROR: 3,
    Outcome.TIMED_OUT: 124,
    Outcome.CANCELLED: 130,
}


def run(
    prompt: Annotated[
        str, typer.Argument(help="What the agent should do (for `script`: a shell script).")
    ],
    repo: Annotated[Path, typer.Option(help="The git repository to work on.")] = Path("."),
    pipeline: Annotated[
        str | None,
        typer.Option(help="Pipeline name; an existing one is continued. Default: from the prompt."),
    ] = None,
    agent: Annotated[str | None, typer.Option(help="claude, codex, aider or script.")] = None,
    image: Annotated[str | None, typer.Option(help="Agent image.")] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Minutes before the agent is stopped.")
    ] = None,
    network: Annotated[
        str | None,
        typer.Option(
            help="Container network: none | allowlist (default: the agent's API and the "
            "--allow-host hosts, through a filtering proxy) | bridge (the whole internet)."
        ),
    ] = None,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host",
            metavar="HOST",
            help="A host the agent may reach on the allowlist network besides its API "
            "(a name, or *.suffix); repeatable. Capped by TRIMO_RUNNER_ALLOWED_HOSTS.",
        ),
    ] = None,
    base: Annotated[
        str | None, typer.Option(help="Base branch for a new pipeline. Default: current branch.")
    ] = None,
    discover: Annotated[
        bool,
        typer.Option(
            "--discover",
            help="Investigate only: the agent answers with findings and a plan, which is "
            "printed and kept for the pipeline's next run; nothing is committed or pushed.",
        ),
    ] = False,
    no_verify: Annotated[
        bool,
        typer.Option(
            "--no-verify",
            help="Skip the checks of `verify:` in .github/trimo.yml (on the base branch), "
            "which otherwise run on the new commits, each in a fresh sandbox.",
        ),
    ] = False,
    no_setup: Annotated[
        bool,
        typer.Option(
            "--no-setup",
            help="Skip `setup:` in .github/trimo.yml (on the base branch), whose paths are "
            "otherwise set up once per cache key and restored in the run's sandbox.",
        ),
    ] = False,
    attempts: Annotated[
        int | None,
        typer.Option(
            help="Run the prompt this many times at once, each attempt on its own branch "
            "trimo/<pipeline>-attempt-<N> from the pipeline's head, then rank them "
            "(default: `attempts:` in .github/trimo.yml, else 1; at most "
            "TRIMO_POLICY_MAX_ATTEMPTS, 4 unless set).",
        ),
    ] = None,
    agents: Annotated[
        str | None,
        typer.Option(
            metavar="A,B",
            help="One attempt of each of these agents (with --attempts, that many of each).",
        ),
    ] = None,
    pick_mode: Annotated[
        str | None,
        typer.Option(
            "--pick",
            metavar="MODE",
            help="After attempts: auto keeps the top attempt when its checks passed; manual "
            "(the default, or `pick:` in .github/trimo.yml) waits for `trimo pick`.",
        ),
    ] = None,
) -> None:
    """Run one prompt in a local repository, on branch trimo/<pipeline>.

    Your working tree and current branch are not touched. Exit status: 0 success,
    1 the agent failed, 3 Trimo could not run it, 124 timed out, 130 stopped. With
    attempts: 0 when the top attempt finished with commits and no failing check.
    """
    try:
        settings = RunnerSettings()
        root = localstate.repo_root(repo.resolve())
        existing = localstate.load(root, localstate.validate_name(pipeline)) if pipeline else None
        name = pipeline or localstate.unique_name(root, localstate.name_from_prompt(prompt))
        base_branch = (
            (existing.base_branch if existing else None) or base or localstate.current_branch(root)
        )
        if base_branch is None:
            raise TrimoError("HEAD is detached, so there is no base branch.", "pass --base BRANCH")
        record = existing or localstate.LocalPipeline(
            name=name, branch=f"trimo/{name}", base_branch=base_branch
        )
        if agent and agents:
            raise TrimoError("--agent and --agents both name agents.", "give one of them")
        mode = network_mode(network or settings.network)
        hosts = allowed_hosts(allow_host or [], mode, settings)
        checks, check_seconds = (
            ([], DEFAULT_VERIFY_TIMEOUT_SECONDS)
            if no_verify or discover
            else local_checks(root, record.base_branch)
        )
        setup = None if no_setup else local_setup(root, record.base_branch)
        if setup is not None and not layers.can_restore():
            raise TrimoError(
                "This repository's setup: cannot be restored here: that needs root and overlayfs.",
                "run trimo as root on a machine with overlayfs, or pass --no-setup",
            )
        config = local_attempts_config(root, record.base_branch)
        planned = plan_agents(
            attempts,
            parse_agents(agents) if agents else [],
            agent or settings.agent,
            1 if discover else config.attempts,
            settings.policy_max_attempts,
        )
        picking = pick_choice(pick_mode, config.pick, len(planned), discover)
        agent_name = planned[0]
        secrets = settings.secrets_for(agent_name)
        for each in dict.fromkeys(planned):
            warn_without_credentials(each, settings)
        request = RunRequest(
            run_id=f"{name}-{len(record.runs) + 1}-{secrets_token(3)}",
            pipeline=name,
            repo=RepoRef(full_name=root.name, clone_url=str(root)),
            branch=record.branch,
            base_branch=record.base_branch,
            prompt=prompt,
            mode="discover" if discover else "code",
            agent=agent_name,
            image=image or settings.image,
            timeout_s=max(1, int((timeout or settings.timeout_minutes) * 60)),
            network=mode,
            allowed_hosts=hosts,
            resources=Resources(memory=settings.memory, cpus=settings.cpus, pids=settings.pids),
            history=record.runs,
            verify=checks,
            verify_timeout_s=check_seconds,
            setup=setup,
            secrets=secrets,
        )
    except (TrimoError, ValueError) as exc:
        raise fail(exc if isinstance(exc, TrimoError) else TrimoError(str(exc))) from exc

    engine = RunEngine(settings.engine_config(f"local@{settings.runner_id}", keep_ledger=True))
    out = Console()
    recover_local(engine, out)
    clean_attempts(root, record, settings, out)
    if len(planned) > 1:
        raise typer.Exit(run_attempt_set(engine, root, record, request, planned, picking,
                                         config.rank_by, settings, out))  # fmt: skip
    stop = StopSignal()
    started = time.monotonic()
    label = f"{name} · {agent_name}"
    blocked: dict[str, int] = {}
    with stop_on_signals(stop), out.status(f"{label}: preparing workspace…") as status:

        def on_event(event: RunEvent) -> None:
            if isinstance(event, EgressBlocked):
                for host, count in event.hosts.items():
                    blocked[host] = blocked.get(host, 0) + count
            if (line := event_line(event)) is not None:
                out.print(line, highlight=False, markup=False)
            status.update(
                f"{label}: running {time.monotonic() - started:.0f}s  (Ctrl-C stops and saves)"
            )

        finished = engine.execute(request, on_event, stop)
    record.runs.append(run_record(request, finished))
    localstate.save(root, record)
    print_summary(out, finished, record.branch, time.monotonic() - started, blocked)
    if discover:
        print_plan(out, finished.plan)
        out.print(
            f'\nImplement it with: trimo run --pipeline {name} "implement the plan above"',
            highlight=False,
        )
    else:
        out.print(f'\nContinue with: trimo run --pipeline {name} "…"', highlight=False)
    raise typer.Exit(EXIT_CODES[finished.outcome])


def warn_without_credentials(agent: str, settings: RunnerSettings) -> None:
    adapter = ADAPTERS[agent]
    if adapter.secret_env and not usable(settings.credentials().get(agent, [])):
        console.print(
            Text.assemble(
                ("warning:", "yellow"),
                f" no credentials for {agent}: set {credential_hint(agent)}, "
                "or the agent will probably fail to start",
            )
        )


def pick_choice(given: str | None, configured: PickMode, planned: int, discover: bool) -> PickMode:
    """`--pick` checked (else the repository's `pick:`)."""
    if discover and planned > 1:
        raise TrimoError(
            "--discover runs once: attempts compare changes, and a discovery makes none.",
            "leave out --attempts and --agents, or --discover",
        )
    if given is None:
        return configured
    if given not in ("auto", "manual"):
        raise TrimoError(f"--pick {given!r} is not a way to pick.", "use --pick auto or manual")
    if planned == 1:
        raise TrimoError(
            "--pick picks among attempts, and this run is one.",
            "add --attempts 2 (or --agents a,b), or leave out --pick",
        )
    return "auto" if given == "auto" else "manual"


def run_attempt_set(
    engine: RunEngine,
    root: Path,
    record: localstate.LocalPipeline,
    request: RunRequest,
    planned: list[str],
    picking: PickMode,
    rank_by: tuple[RankKey, ...],
    settings: RunnerSettings,
    out: Console,
) -> int:
    """The attempts of `request`, at once, each on its own branch from the pipeline branch's
    head; then the ranked table, and the pick when `picking` is auto. The exit status."""
    try:
        start_sha = pipeline_head(root, record)
    except TrimoError as exc:
        raise fail(exc) from exc
    numbers = record.take_numbers(len(planned))
    agents = dict(zip(numbers, planned, strict=True))
    started, started_at = time.monotonic(), datetime.now(UTC)
    attempt_set = localstate.AttemptSet(
        start_sha=start_sha,
        started_at=started_at,
        rank_by=rank_by,
        attempts=[
            localstate.LocalAttempt(
                number=n, branch=record.attempt_branch(n), result=AttemptResult(number=n, agent=a)
            )
            for n, a in agents.items()
        ],
    )
    record.attempt_sets.append(attempt_set)  # known, and its numbers taken, before it starts
    localstate.save(root, record)
    token = secrets_token(3)
    requests = {
        n: attempt_request(
            request, n, agent, record.attempt_branch(n), f"{record.name}-a{n}-{token}",
            settings.secrets_for(agent),
        )
        for n, agent in agents.items()
    }  # fmt: skip
    width = len(str(numbers[-1]))
    progress = Progress(agents)
    printing = threading.Lock()
    stop = StopSignal()
    out.print(
        Text(
            f"▶ {len(numbers)} attempts of {record.name} from {record.branch} "
            f"({start_sha[:7]}): " + ", ".join(f"{n} {a}" for n, a in agents.items()),
            "bold",
        )
    )
    with stop_on_signals(stop), out.status(progress.line(0)) as status:

        def on_event(number: int, event: RunEvent) -> None:
            progress.saw(number, event)
            if (line := prefixed(number, width, event)) is not None:
                with printing:
                    out.print(line, highlight=False)

        ended = run_all(
            engine, requests, on_event, stop,
            lambda: status.update(progress.line(time.monotonic() - started)),
        )  # fmt: skip
    ranked = rank([result_of(e, agents[e.number]) for e in ended], rank_by)
    by_number = {e.number: e.finished for e in ended}
    attempt_set.attempts = [
        localstate.LocalAttempt(
            number=r.number,
            branch=record.attempt_branch(r.number),
            result=r,
            run=run_record(requests[r.number], by_number[r.number]),
        )
        for r in ranked
    ]
    localstate.save(root, record)
    notes = (
        [] if picking == "manual" or stop.is_set() else auto_keep(root, record, ranked, settings)
    )
    show_attempts(out, record, attempt_set, ranked, notes)
    return attempts_exit_code(ranked, stop.is_set())


def auto_keep(
    root: Path,
    record: localstate.LocalPipeline,
    ranked: list[AttemptResult],
    settings: RunnerSettings,
) -> list[Text]:
    """`pick: auto`: keep the top attempt when it passed its checks; what happened."""
    top = auto_pick(ranked)
    if top is None:
        return [Text("pick: auto kept none: no attempt finished with its checks passed.", "yellow")]
    try:
        said = localpick.pick(
            root, record, top.number, settings.attempts_keep_days, datetime.now(UTC),
            "pick: auto, ranked first with its checks passed",
        )  # fmt: skip
    except TrimoError as exc:
        return [Text(f"pick: auto did not keep attempt {top.number}: {exc.message}", "yellow")]
    localstate.save(root, record)
    return [Text(line, "green") for line in said]


def pipeline_head(root: Path, record: localstate.LocalPipeline) -> str:
    """The commit every attempt starts from: the pipeline branch's head, made at the base
    branch's head when the pipeline has no branch yet (so all attempts share it)."""
    head = gitops.branch_sha(root, record.branch)
    if head is not None:
        return head
    base = gitops.branch_sha(root, record.base_branch)
    if base is None:
        raise TrimoError(f"The base branch {record.base_branch!r} is not in the repository.")
    gitops.git(root, "update-ref", f"refs/heads/{record.branch}", base, "0" * 40)
    return base


def run_record(request: RunRequest, finished: RunFinished) -> RunRecord:
    return RunRecord(
        run_id=request.run_id,
        prompt=request.prompt,
        agent=request.agent,
        mode=request.mode,
        plan=finished.plan,
        outcome=finished.outcome,
        reason=finished.reason,
        commits=finished.commits,
        diff=finished.diff,
        finished_at=finished.at,
    )


def attempts_exit_code(ranked: list[AttemptResult], stopped: bool) -> int:
    """0 when the top attempt finished with commits and no failing check; 130 when stopped;
    3 when Trimo could run none of them; else 1."""
    if stopped:
        return EXIT_CODES[Outcome.CANCELLED]
    top = ranked[0]
    if top.finished_with_work and top.verified is not False:
        return 0
    if all(r.outcome is Outcome.ERROR for r in ranked):
        return EXIT_CODES[Outcome.ERROR]
    return 1


def clean_attempts(
    root: Path, record: localstate.LocalPipeline, settings: RunnerSettings, out: Console
) -> None:
    """Delete the pipeline's attempt branches the keep window after their pick, saying so."""
    said = localpick.clean(root, record, settings.attempts_keep_days, datetime.now(UTC))
    if said:
        localstate.save(root, record)
    for line in said:
        out.print(Text(line, "dim"), highlight=False)


def pick(
    pipeline: Annotated[str, typer.Argument(help="The pipeline whose attempts ran.")],
    attempt: Annotated[int, typer.Argument(help="The attempt to keep (its number).")],
    repo: Annotated[Path, typer.Option(help="The git repository.")] = Path("."),
) -> None:
    """Keep one attempt: its commits become the pipeline's branch trimo/<pipeline>.

    The first pick is a fast-forward. Within TRIMO_ATTEMPTS_KEEP_DAYS (7 unless set) a later
    pick switches, resetting the branch; after that the other attempts' branches are deleted.
    """
    out = Console()
    try:
        settings = RunnerSettings()
        root = localstate.repo_root(repo.resolve())
        record = localstate.load(root, localstate.validate_name(pipeline))
        if record is None:
            raise TrimoError(
                f"There is no pipeline {pipeline!r} in this repository.",
                "trimo pipelines lists them",
            )
        clean_attempts(root, record, settings, out)
        said = localpick.pick(
            root, record, attempt, settings.attempts_keep_days, datetime.now(UTC), "picked by hand"
        )
        localstate.save(root, record)
    except (TrimoError, ValueError) as exc:
        raise fail(exc if isinstance(exc, TrimoError) else TrimoError(str(exc))) from exc
    for line in said:
        out.print(Text(line, "green"), highlight=False)
    out.print(f'Continue with: trimo run --pipeline {record.name} "…"', highlight=False)


CREDENTIAL_HINTS = {
    "claude": "TRIMO_ANTHROPIC_API_KEY, or TRIMO_CLAUDE_CODE_OAUTH_TOKEN "
    "(a Claude Pro or Max subscription: run `claude setup-token`)",
    "codex": "TRIMO_OPENAI_API_KEY, or TRIMO_CODEX_AUTH_FILE "
    "(a ChatGPT sign-in: the ~/.codex/auth.json that `codex login` writes)",
    "aider": "TRIMO_ANTHROPIC_API_KEY or TRIMO_OPENAI_API_KEY",
}


def credential_hint(agent: str) -> str:
    secret_env = ADAPTERS[agent].secret_env if agent in ADAPTERS else ()
    return CREDENTIAL_HINTS.get(agent) or " or ".join(f"TRIMO_{name}" for name in secret_env)


def usable(credentials: list[str]) -> bool:
    """Whether any of an agent's credentials (from `RunnerSettings.credentials`) is there."""
    return any(not item.endswith("(missing)") for item in credentials)


def network_mode(value: str) -> NetworkMode:
    for mode in NETWORK_MODES:
        if value == mode:
            return mode
    raise TrimoError(
        f"Unknown network mode {value!r}.",
        "use --network none (no network), allowlist (the agent's API and --allow-host "
        "hosts; the default) or bridge (the whole internet)",
    )


def allowed_hosts(values: list[str], mode: NetworkMode, settings: RunnerSettings) -> list[str]:
    """The --allow-host hosts, checked and within this machine's TRIMO_RUNNER_ALLOWED_HOSTS."""
    if not values:
        return []
    if mode != "allowlist":
        raise TrimoError(
            f"--allow-host needs the allowlist network, but this run's network is {mode!r}.",
            "add --network allowlist, or leave out --allow-host",
        )
    hosts, errors = clean_hosts(values)
    if errors:
        raise TrimoError(
            f"--allow-host: {'; '.join(errors)}.",
            "give a host name like registry.example.com, or *.suffix like *.example.com",
        )
    caps = settings.runner_policy().allowed_hosts
    if outside := outside_caps(hosts, caps):
        named = ", ".join(outside)
        raise TrimoError(
            f"This machine does not allow the host{'s' if len(outside) > 1 else ''} "
            f"{named}: TRIMO_RUNNER_ALLOWED_HOSTS allows only {', '.join(caps)}.",
            f"add {named} to TRIMO_RUNNER_ALLOWED_HOSTS, or leave out that --allow-host",
        )
    return hosts


STOPPING_SIGNALS = {
    signal.SIGINT: "stopped with Ctrl-C",
    signal.SIGTERM: "stopped by SIGTERM",
    signal.SIGHUP: "stopped: the terminal went away (SIGHUP)",
}


@contextlib.contextmanager
def stop_on_signals(stop: StopSignal) -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP stop the agent and save its work; a second one interrupts."""
    received = 0

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal received
        received += 1
        if received > 1:
            raise KeyboardInterrupt
        stop.stop(STOPPING_SIGNALS[signal.Signals(signum)])

    previous = {sig: signal.signal(sig, on_signal) for sig in STOPPING_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def recover_local(engine: RunEngine, out: Console) -> None:
    """Save and clean up what a killed `trimo run` left behind (its container, its work)."""
    for finished in engine.recover_abandoned(lambda _event: None):
        out.print(
            f"Saved the work of run {finished.run_id}, which a killed `trimo run` left behind "
            f"({finished.outcome.value}).",
            highlight=False,
            markup=False,
        )


def pipelines(
    repo: Annotated[Path, typer.Option(help="The git repository.")] = Path("."),
) -> None:
    """List this repository's local pipelines and their runs."""
    try:
        root = localstate.repo_root(repo.resolve())
        found = localstate.list_all(root)
    except TrimoError as exc:
        raise fail(exc) from exc
    out = Console()
    if not found:
        out.print('No pipelines yet. Start one with: trimo run "your prompt"')
        return
    for item in found:
        runs = f"{len(item.runs)} run(s)"
        out.print(
            Text.assemble(
                (item.name, "bold"), f"  {item.branch}  (from {item.base_branch}, {runs})"
            )
        )
        for n, record in enumerate(item.runs, 1):
            style = OUTCOME_STYLE[record.outcome][0]
            prompt_line = safe((record.prompt.strip().splitlines() or [""])[0], 70)
            commits = (
                "discovery" if record.mode == "discover" else f"{len(record.commits)} commit(s)"
            )
            out.print(
                Text.assemble(
                    f"  {n}. ",
                    (f"{record.outcome.value:<9}", style),
                    f" {commits}  {prompt_line}",
                )
            )
        for attempt_set in item.attempt_sets:
            out.print(attempts_line(item, attempt_set), highlight=False)


def attempts_line(item: localstate.LocalPipeline, attempt_set: localstate.AttemptSet) -> Text:
    """One set of attempts in `trimo pipelines`: each one's standing, best first, and the pick."""
    numbers = sorted(a.number for a in attempt_set.attempts)
    standings = ", ".join(f"{a.number} {a.result.standing}" for a in attempt_set.attempts)
    if attempt_set.picked is not None:
        kept = Text(f"kept {attempt_set.picked}", "green")
    else:
        kept = Text(f"none kept yet: trimo pick {item.name} N", "yellow")
    gone = " (branches deleted)" if attempt_set.cleaned else ""
    return Text.assemble(f"  attempts {numbers[0]}–{numbers[-1]}{gone}: {standings}; ", kept)


def host_rules_problem(client: docker.DockerClient, runner_id: str) -> str | None:
    """What is wrong with this runner's host rules (runner.network.firewall), or None."""
    try:
        client.images.get(PROXY_IMAGE)
    except docker.errors.ImageNotFound:
        return f"runner {runner_id}'s host rules are not checked: {PROXY_IMAGE} is not built yet"
    try:
        return firewall.problem(client, runner_id)
    except TrimoError as exc:
        return exc.message


def machine_checks(out: Console) -> tuple[int, RunnerSettings]:
    """`trimo doctor` on this machine: settings, git, Docker, the agent image, disks,
    credentials, the cache directory. Prints each check; returns the problems and settings."""
    out.print(Text("This machine", style="bold"))
    problems = 0

    def report(ok: bool, what: str, fix: str = "", required: bool = True) -> None:
        nonlocal problems
        if ok:
            out.print(f"[green]✓[/] {what}")
        else:
            problems += int(required)
            mark = "[red]✗[/]" if required else "[yellow]![/]"
            out.print(f"{mark} {what}" + (f"\n    → {fix}" if fix else ""))

    try:
        settings = RunnerSettings()
        report(True, "settings load (TRIMO_* variables and .env)")
    except ValueError as exc:
        report(False, f"settings are invalid: {exc}", "fix the TRIMO_* variables or .env")
        raise typer.Exit(1) from exc
    report(shutil.which("git") is not None, "git is installed", "install git")
    try:
        client = dockerclient.connect(timeout=10)
        report(True, "Docker engine is reachable")
        try:
            dockerclient.require_image(client, settings.image)
            report(True, f"image {settings.image} is built")
        except TrimoError as exc:
            report(False, exc.message, exc.hint)
        recover_local(RunEngine(settings.engine_config(f"local@{settings.runner_id}", True)), out)
        wrong = host_rules_problem(client, settings.runner_id)
        report(
            wrong is None,
            wrong
            or f"runner {settings.runner_id}'s host rules are in place: its runs and previews "
            "reach neither this host nor private addresses",
            "start the runner (`trimo runner` puts them in place, and takes them away when it "
            "stops); Docker must be able to run a container with NET_ADMIN on the host's network",
            required=False,
        )
    except TrimoError as exc:
        report(False, exc.message, exc.hint)
    limited = disk.parse_size(settings.disk) > 0 and disk.can_limit()
    report(
        limited,
        f"each pipeline's and each preview's disk is limited to {settings.disk}"
        if limited
        else "pipelines and previews have no disk limit: an agent or a preview's setup can "
        "fill this machine's disk",
        "run Trimo as root on a machine with loop devices (/dev/loop-control), "
        "and keep TRIMO_DISK above 0",
        required=False,
    )
    restorable = layers.can_restore()
    report(
        restorable,
        f"a repository's setup: is cached (at most {settings.setup_cache_max}) and restored "
        "in an instant"
        if restorable
        else "a repository's setup: cannot be restored here: its runs would fail",
        "run Trimo as root on a machine with overlayfs (`modprobe overlay`)",
        required=False,
    )
    for agent, have in settings.credentials().items():
        if not ADAPTERS[agent].secret_env:
            continue
        ok = usable(have)
        out.print(
            Text.assemble(
                ("✓ " if ok else "! ", "green" if ok else "yellow"),
                f"credentials for {agent}: {', '.join(have) or 'none'}",
                "" if ok else f"\n    → set {credential_hint(agent)}",
            )
        )
    problems += doctor.show(
        out, "Agents' endpoints", doctor.endpoint_checks(endpoint_facts(settings))
    )
    out.print(
        "· aider is installed in the full image (`trimo image build`), not in the base "
        "image (`--target base`), which runs only the script agent",
        markup=False,
        highlight=False,
    )
    try:
        settings.cache_dir.mkdir(parents=True, exist_ok=True)
        report(
            os.access(settings.cache_dir, os.W_OK),
            f"cache directory {settings.cache_dir} is writable",
        )
    except OSError as exc:
        report(False, f"cache directory {settings.cache_dir}: {exc}", "set TRIMO_CACHE_DIR")
    return problems, settings


def endpoint_facts(settings: RunnerSettings) -> doctor.EndpointFacts:
    codex, text, error = settings.codex_config_file, None, ""
    if codex is not None:
        try:
            text = codex.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            error = str(exc)
    return doctor.EndpointFacts(
        anthropic_base_url=settings.anthropic_base_url,
        codex_config_file=str(codex) if codex else None,
        codex_config=text,
        codex_error=error,
    )


runner_app = typer.Typer()


@runner_app.callback(invoke_without_command=True)
def runner(ctx: typer.Context) -> None:
    """Run queued jobs on this machine (an arq worker; Ctrl-C or SIGTERM drains).

    Settings: TRIMO_REDIS_URL, TRIMO_RUNNER_ID, TRIMO_RUNNER_LABELS,
    TRIMO_RUNNER_CONCURRENCY, TRIMO_DRAIN_SECONDS, and the limits
    TRIMO_RUNNER_ALLOWED_{REPOS,IMAGES,NETWORKS,HOSTS} and TRIMO_RUNNER_MAX_TIMEOUT_MINUTES.
    Previews: TRIMO_RUNNER_PREVIEW_URL (where people reach this runner's previews, best
    a host per preview: https://*.previews.example.com; previews are off without it),
    TRIMO_RUNNER_PREVIEW_LISTEN, TRIMO_RUNNER_MAX_PREVIEWS and
    TRIMO_RUNNER_PREVIEW_MAX_HOURS.

    Logs: rich on a terminal, JSON lines otherwise (TRIMO_LOG_FORMAT=auto|rich|json).

    `trimo runner install` installs this machine as a runner under systemd.
    """
    if ctx.invoked_subcommand is not None:
        return
    import asyncio

    from runner.daemon import RunnerDaemon

    configure_logging()
    try:
        settings = RunnerSettings()
        dockerclient.connect(timeout=10)
    except TrimoError as exc:
        raise fail(exc) from exc
    except ValueError as exc:
        raise fail(TrimoError(f"invalid settings: {exc}")) from exc
    daemon = RunnerDaemon(settings, settings.runner_policy())
    asyncio.run(daemon.serve())


@runner_app.command("install")
def runner_install(
    redis_url: Annotated[
        str | None,
        typer.Option(help="Where Redis is, without its password. Writes runner.env whole."),
    ] = None,
    runner_id: Annotated[str | None, typer.Option(help="Default: this host's name.")] = None,
    labels: Annotated[str | None, typer.Option(help="Queues to take runs from.")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Runs at once (default 2).")] = None,
    image: Annotated[str | None, typer.Option(help="The agent image.")] = None,
    redis_password_file: Annotated[
        Path | None,
        typer.Option(help="A file holding Redis's password (- reads standard input)."),
    ] = None,
    root: Annotated[Path, typer.Option(help="Install under this directory, not /.")] = Path("/"),
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing runner.env and password.")
    ] = False,
    check: Annotated[
        bool, typer.Option(help="Run `trimo doctor --runner` as the unit would.")
    ] = True,
) -> None:
    """Install this machine as a runner: /etc/trimo/runner.env and redis-password (0600), the
    systemd unit trimo-runner.service (with the agents' keys in /etc/trimo as credentials),
    and its directories; then check them. Safe to run again: what is there is kept."""
    layout = install.Layout(root.absolute())
    trimo = Path(sys.executable).parent / "trimo"
    given: dict[str, str | int | None] = {
        "runner_id": runner_id,
        "runner_labels": labels,
        "runner_concurrency": concurrency,
        "image": image,
    }
    out = Console()
    try:
        variables = None
        if redis_url is not None:
            values: dict[str, str | int] = {
                "redis_url": redis_url,
                "runner_id": socket.gethostname(),
                "runner_labels": "default",
                "runner_concurrency": 2,
            }
            values |= {k: v for k, v in given.items() if v is not None}
            variables = install.settings_lines(values)
        elif named := [install.OPTIONS[k] for k, v in given.items() if v is not None]:
            raise TrimoError(
                f"{', '.join(named)} without --redis-url",
                "runner.env is written whole: give --redis-url too (and --force to replace it)",
            )
        password = None
        if redis_password_file is not None:
            password = _read_password(redis_password_file)
        steps = install.install(layout, trimo, variables, password, force)
    except TrimoError as exc:
        raise fail(exc) from exc
    except OSError as exc:
        raise fail(TrimoError(f"cannot install: {exc}", "run it as root (sudo)")) from exc
    for step in steps:
        out.print(f"{step.path}: {step.done}", highlight=False, markup=False)
    problems = doctor.show(out, "\nInstalled files", install.file_checks(layout, trimo))
    if check:
        problems += _check_as_the_unit(layout, trimo)
    if problems:
        out.print("\nFix the problems above, then run `trimo runner install` again.")
        raise typer.Exit(1)
    out.print(
        "\nStart it: systemctl daemon-reload && systemctl enable --now trimo-runner"
        if layout.root == Path("/")
        else f"\nInstalled under {layout.root}."
    )


def _read_password(path: Path) -> bytes:
    try:
        data = sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
    except OSError as exc:
        raise TrimoError(f"--redis-password-file {path}: {exc.strerror or exc}") from None
    if b"\n" in data.rstrip(b"\r\n") or not data.strip():
        raise TrimoError(
            f"--redis-password-file {path}: not one line of text",
            "the file holds only the password",
        )
    return data


def _check_as_the_unit(layout: install.Layout, trimo: Path) -> int:
    """`trimo doctor --runner` with the unit's settings alone: runner.env, the unit's own
    variables and credentials, in its working directory. How many problems (0 or 1)."""
    from dotenv import dotenv_values

    unit = layout.unit.read_text()
    dropin = layout.dropin.read_text() if layout.dropin.exists() else None
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIMO_")}
    env |= {k: v for k, v in dotenv_values(layout.env_file).items() if v is not None}
    env |= install.unit_environment(layout, unit, dropin)
    sys.stdout.flush()
    done = subprocess.run(
        [str(trimo), "doctor", "--runner", "--before-start"], env=env, cwd=layout.directories[1]
    )
    return int(done.returncode != 0)


def configure_logging() -> None:
    """Logs for the long-running commands: rich on a terminal, JSON lines elsewhere."""
    from runner import logs

    logs.configure()
