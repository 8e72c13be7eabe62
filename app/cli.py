"""The `trimo` command: the runner's commands plus the App's (`serve`, `worker`, `setup`)."""

from __future__ import annotations

import typer

from app.setup import setup_command
from runner import cli as runner_cli

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


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
