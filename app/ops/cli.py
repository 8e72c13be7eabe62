"""The `trimo` command: the runner's commands plus the App's (`serve`, `worker`, `setup`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from app.ops.setup import setup_command
from app.settings import AppSettings, SettingsError
from runner import cli as runner_cli
from runner import dockerclient, redisurl
from runner.errors import TrimoError
from runner.settings import RunnerSettings

if TYPE_CHECKING:
    from arq.connections import ArqRedis

    from app.ops.server import Parts

T = TypeVar("T")

cli = typer.Typer(
    help="Trimo runs coding agents in isolated containers on your machines, driven from GitHub.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from runner import __version__

        typer.echo(f"trimo {__version__}")
        raise typer.Exit()


@cli.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print Trimo's version."
        ),
    ] = False,
) -> None:
    """Options before any command (the help text is the Typer's)."""


cli.add_typer(runner_cli.image_app, name="image")
cli.command()(runner_cli.run)
cli.command()(runner_cli.pipelines)
cli.command()(runner_cli.pick)
cli.add_typer(runner_cli.runner_app, name="runner")
cli.command("setup")(setup_command)
events_app = typer.Typer(help="Events the App could not handle (the dead-letter stream).")
cli.add_typer(events_app, name="events")


def _app_settings(need_web: bool) -> AppSettings:
    """Settings for the App, checked up front so a mistake is one clear line, not a trace."""
    try:
        settings = AppSettings()
        if settings.github_app_id is None:
            raise SettingsError(
                "TRIMO_GITHUB_APP_ID is not set.", "run `trimo setup` or set it in .env"
            )
        settings.private_key()
        if need_web:
            settings.require_webhook_secret()
    except TrimoError as exc:
        raise runner_cli.fail(exc) from exc
    except ValueError as exc:
        raise runner_cli.fail(TrimoError(f"invalid settings: {exc}")) from exc
    return settings


def _run_parts(settings: AppSettings, parts: Parts) -> None:
    from redis.exceptions import RedisError

    from app.ops import server  # imported here: `trimo run` need not load the App

    runner_cli.configure_logging()
    try:
        asyncio.run(server.run(settings, parts))
    except (OSError, RedisError) as exc:
        raise runner_cli.fail(
            TrimoError(
                f"Redis is not reachable at {redisurl.display(settings.redis_url)}: {exc}",
                "start redis-server or set TRIMO_REDIS_URL",
            )
        ) from exc


@cli.command()
def serve() -> None:
    """Run the GitHub App: webhook endpoint (TRIMO_HOST:TRIMO_PORT), event worker and reporter.

    GET /metrics serves Prometheus's format; TRIMO_METRICS_TOKEN guards it.

    Logs: rich on a terminal, JSON lines otherwise (TRIMO_LOG_FORMAT=auto|rich|json).
    """
    from app.ops.server import Parts

    _run_parts(_app_settings(need_web=True), Parts())


@cli.command()
def worker() -> None:
    """Run the App's event worker and reporter alone (to scale them apart from `serve`).

    GET /healthz and /metrics (this process's own figures; TRIMO_METRICS_TOKEN guards it) on
    TRIMO_HOST:TRIMO_WORKER_PORT (default 8001).
    """
    from app.ops.server import Parts

    _run_parts(_app_settings(need_web=False), Parts(web=False))


@cli.command()
def up() -> None:
    """Everything for one machine: App server, worker, reporter and a runner.

    Without TRIMO_REDIS_URL it starts a private Redis of its own and stops it on exit.
    """
    from app.ops import server

    settings = _app_settings(need_web=True)
    try:
        runner_settings = RunnerSettings()
        dockerclient.connect(timeout=10)
    except TrimoError as exc:
        raise runner_cli.fail(exc) from exc
    with contextlib.ExitStack() as stack:
        if "redis_url" not in settings.model_fields_set:
            try:
                url = stack.enter_context(server.private_redis(runner_settings.cache_dir / "redis"))
            except TrimoError as exc:
                raise runner_cli.fail(exc) from exc
            settings = settings.model_copy(update={"redis_url": url})
            runner_settings = runner_settings.model_copy(update={"redis_url": url})
            runner_cli.console.print(f"private Redis at {url}")
        _run_parts(settings, server.Parts(runner=runner_settings))


@cli.command()
def doctor(
    app: Annotated[bool, typer.Option("--app", help="Check the App's side here.")] = False,
    runner: Annotated[
        bool, typer.Option("--runner", help="Check this machine as a runner.")
    ] = False,
    before_start: Annotated[
        bool,
        typer.Option(
            "--before-start",
            help="With --runner: its runner is not started yet (`trimo runner install`), so "
            "no runner online for its labels is not a problem.",
        ),
    ] = False,
) -> None:
    """Check the deployment from here, and say how to fix what is wrong. Both sides: Redis
    reachable and persistent, a runner online for each label in use, every runner's images
    and version (from their heartbeats). A runner (--runner): this machine's Docker, agent
    image, disks and credentials. The App (--app): the webhook secret and the App's
    credentials (GitHub is asked). Without either: the App where TRIMO_GITHUB_APP_ID is set,
    a runner where TRIMO_RUNNER_ID or _LABELS is or nothing is."""
    from rich.console import Console
    from rich.text import Text

    from app.ops import doctor as deployment

    out = Console()
    app_settings = deployment.app_settings()
    sides = deployment.choose_sides(
        app, runner, deployment.app_configured(app_settings), _runner_configured()
    )
    checked = " and ".join(
        name for name, on in (("the App", sides.app), ("a runner", sides.runner)) if on
    )
    out.print(f"Checking {checked} ({sides.why}).\n", highlight=False)
    problems, preview_url, starting = 0, "", list[str]()
    if sides.runner:
        problems, runner_settings = runner_cli.machine_checks(out)
        redis_url, preview_url = runner_settings.redis_url, runner_settings.runner_preview_url
        if before_start:
            starting = runner_settings.labels()
    elif isinstance(app_settings, AppSettings):
        redis_url = app_settings.redis_url
    else:
        out.print(Text.assemble(("✗ ", "red"), app_settings), highlight=False)
        raise typer.Exit(1)
    problems += asyncio.run(
        deployment.report(out, redis_url, preview_url, app=sides.app, starting=starting)
    )
    out.print("\nAll good." if not problems else f"\n{problems} problem(s) to fix.")
    raise typer.Exit(1 if problems else 0)


def _runner_configured() -> bool:
    """Whether this environment names a runner (TRIMO_RUNNER_ID or TRIMO_RUNNER_LABELS)."""
    try:
        given = RunnerSettings().model_fields_set
    except ValueError:
        return True  # `machine_checks` says what is wrong
    return bool(given & {"runner_id", "runner_labels"})


@events_app.command("failed")
def events_failed(limit: int = typer.Option(50, help="How many, newest first.")) -> None:
    """List the events the App gave up on, with their error."""
    from app.reporting import failures

    async def listed() -> list[failures.Parked]:
        async with _pool() as pool:
            return await failures.parked(pool, count=limit)

    items = _with_redis(listed)
    if not items:
        runner_cli.console.print("no failed events")
        return
    for item in items:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(item.at))
        action = item.payload.get("action")
        name = f"{item.event}.{action}" if isinstance(action, str) else item.event
        runner_cli.console.print(
            f"{item.delivery_id}  {name}  {when} UTC  tries {item.tries}  entry {item.entry_id}",
            highlight=False,
        )
        runner_cli.console.print(f"    {item.error}", highlight=False, markup=False)


@events_app.command("retry")
def events_retry(ref: str = typer.Argument(..., help="Delivery id (or stream entry id).")) -> None:
    """Queue a failed event again; steps that succeeded before are not repeated."""
    from app.edge.web import HANDLER_FUNCTION, QUEUE_NAME
    from app.reporting import failures

    async def retried() -> failures.Parked | None:
        async with _pool() as pool:
            item = await failures.find(pool, ref)
            if item is not None:
                await failures.replay(pool, item, QUEUE_NAME, HANDLER_FUNCTION)
            return item

    item = _with_redis(retried)
    if item is None:
        raise runner_cli.fail(TrimoError(f"no parked event {ref}", "see `trimo events failed`"))
    runner_cli.console.print(f"queued {item.event} {item.delivery_id} again", highlight=False)


@contextlib.asynccontextmanager
async def _pool() -> AsyncIterator[ArqRedis]:
    from arq import create_pool

    from runner.redisurl import redis_settings

    pool = await create_pool(redis_settings(AppSettings().redis_url), retry=1)
    try:
        yield pool
    finally:
        await pool.aclose()


def _with_redis(call: Callable[[], Coroutine[Any, Any, T]]) -> T:
    from redis.exceptions import RedisError

    try:
        return asyncio.run(call())
    except (OSError, RedisError) as exc:
        raise runner_cli.fail(
            TrimoError(
                f"Redis is not reachable: {exc}", "start redis-server or set TRIMO_REDIS_URL"
            )
        ) from exc


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
