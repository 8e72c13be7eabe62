"""The runner's commands: `trimo run`, `trimo pipelines`, `trimo image`, `trimo doctor`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from runner import dockerclient, images
from runner.errors import TrimoError

console = Console(stderr=True)
image_app = typer.Typer(help="Build and inspect the agent image.", no_args_is_help=True)


def fail(error: TrimoError) -> typer.Exit:
    """Print a TrimoError the way a person wants to read it, and exit non-zero."""
    console.print(f"[bold red]error:[/] {error.message}")
    if error.hint:
        console.print(f"  [yellow]→[/] {error.hint}")
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
