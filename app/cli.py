"""The `trimo` command: the runner's commands plus the App's (`serve`, `worker`, `setup`)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import typer

from app.settings import AppSettings, SettingsError
from app.setup import setup_command
from runner import cli as runner_cli
from runner import dockerclient
from runner.errors import TrimoError
from runner.settings import RunnerSettings

if TYPE_CHECKING:
    from app.server import Parts

cli = typer.Typer(
    help="Trimo runs coding agents in isolated containers on your machines, driven from GitHub.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
cli.add_typer(runner_cli.image_app, name="image")
cli.command()(runner_cli.run)
cli.command()(runner_cli.pipelines)
cli.command()(runner_cli.doctor)
cli.command()(runner_cli.runner)
cli.command("setup")(setup_command)


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

    from app import server  # imported here: `trimo run` need not load the App

    runner_cli.configure_logging()
    try:
        asyncio.run(server.run(settings, parts))
    except (OSError, RedisError) as exc:
        raise runner_cli.fail(
            TrimoError(
                f"Redis is not reachable at {settings.redis_url}: {exc}",
                "start redis-server or set TRIMO_REDIS_URL",
            )
        ) from exc


@cli.command()
def serve() -> None:
    """Run the GitHub App: webhook endpoint (TRIMO_HOST:TRIMO_PORT), event worker and reporter."""
    from app.server import Parts

    _run_parts(_app_settings(need_web=True), Parts())


@cli.command()
def worker() -> None:
    """Run the App's event worker and reporter alone (to scale them apart from `serve`)."""
    from app.server import Parts

    _run_parts(_app_settings(need_web=False), Parts(web=False))


@cli.command()
def up() -> None:
    """Everything for one machine: App server, worker, reporter and a runner.

    Without TRIMO_REDIS_URL it starts a private Redis of its own and stops it on exit.
    """
    from app import server

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


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
