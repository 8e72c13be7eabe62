"""`trimo setup`: register Trimo's GitHub App from `app.yml` with GitHub's manifest flow.

A local page on 127.0.0.1 posts the manifest to GitHub; GitHub sends the browser back to
`/callback` with a one-time code, which becomes the App's id, private key and webhook secret,
written next to the env file. Works the same for github.com and GitHub Enterprise Server.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import re
import secrets
import socket
import tempfile
import threading
import webbrowser
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote, urlencode, urlsplit

import typer
import uvicorn
import yaml
from rich.console import Console
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from app.github.tolerant import Tolerant
from runner.errors import TrimoError
from runner.templating import render

if TYPE_CHECKING:
    from githubkit.exception import RequestFailed

MANIFEST_PATH = Path(__file__).resolve().parents[2] / "app.yml"
GITHUB_COM_API = "https://api.github.com"
WEBHOOK_PATH = "/webhooks/github"
OAUTH_CALLBACK_PATH = "/oauth/callback"
"""Where GitHub sends people back after they sign in to the dashboard (app.dashboard.auth)."""
DEFAULT_PORT = 8765
EXCHANGE_TIMEOUT_SECONDS = 30.0

_ORG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")
_CODE = re.compile(r"[A-Za-z0-9_-]{1,256}")
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,99}")
_ENV_ASSIGNMENT = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)", re.DOTALL)
_BARE_VALUE = re.compile(r"[A-Za-z0-9_./:@+,-]*")


class SetupError(TrimoError):
    """Setting up the GitHub App failed; nothing was written."""


class ConversionError(SetupError):
    """GitHub did not turn the manifest code into an App."""


# --- pure pieces -----------------------------------------------------------------------------


def _web_base(github_url: str) -> tuple[str, str]:
    """(normalised web URL without trailing slash, lower-case host) of a GitHub instance."""
    parts = urlsplit(github_url.strip())
    host = (parts.hostname or "").lower()
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise SetupError(
            f"not a GitHub address: {github_url!r}",
            hint="pass the web address, e.g. https://github.com or https://ghe.example.com",
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise SetupError(
            f"the GitHub address {github_url!r} has a query, fragment or credentials",
            hint="pass only the web address, e.g. https://ghe.example.com",
        )
    if host.startswith("api."):
        raise SetupError(
            f"{github_url!r} is an API address",
            hint="pass the web address people browse, e.g. https://github.com",
        )
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}", host


def api_url_for(github_url: str) -> str:
    """The REST API base of the GitHub instance whose web address is `github_url`."""
    base, host = _web_base(github_url)
    if host in ("github.com", "www.github.com"):
        return GITHUB_COM_API
    if host.endswith(".ghe.com"):
        return f"https://api.{host}"
    return f"{base}/api/v3"


def new_app_url(github_url: str, org: str | None) -> str:
    """Where the manifest is posted: the new-App page of the user, or of `org`."""
    base, host = _web_base(github_url)
    if host == "www.github.com":
        base = "https://github.com"
    if org is None:
        return f"{base}/settings/apps/new"
    if not _ORG.fullmatch(org):
        raise SetupError(f"not an organization name: {org!r}", hint="pass its login, e.g. my-org")
    return f"{base}/organizations/{quote(org, safe='')}/settings/apps/new"


def webhook_url_for(url: str) -> str:
    """The webhook URL from the address of `trimo serve`; a bare origin gets the webhook path."""
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise SetupError(
            f"not a webhook URL: {url!r}",
            hint="pass the public address of `trimo serve`, e.g. https://trimo.example.com",
        )
    if parts.username or parts.password or parts.fragment:
        raise SetupError(f"the webhook URL {url!r} has credentials or a fragment")
    cleaned = url.strip()
    if parts.path in ("", "/") and not parts.query:
        return cleaned.rstrip("/") + WEBHOOK_PATH
    return cleaned


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def build_manifest(
    template: Mapping[str, Any], webhook_url: str, redirect_url: str, workflows: bool = False
) -> dict[str, Any]:
    """The manifest to post: `template` (app.yml) with the webhook, redirect and sign-in
    callback URLs filled in, and with the `workflows` permission when agents may change
    `.github/workflows`."""
    manifest = copy.deepcopy(dict(template))
    if workflows:
        manifest["default_permissions"] = {
            **dict(manifest.get("default_permissions") or {}),
            "workflows": "write",
        }
    hook = dict(manifest.get("hook_attributes") or {})
    hook["url"] = webhook_url
    hook.setdefault("active", True)
    manifest["hook_attributes"] = hook
    manifest["redirect_url"] = redirect_url
    manifest.setdefault("callback_urls", [_origin(webhook_url) + OAUTH_CALLBACK_PATH])
    if not manifest.get("url"):
        manifest["url"] = _origin(webhook_url)
    return manifest


def _format_env_value(value: str) -> str:
    if _BARE_VALUE.fullmatch(value):
        return value
    if "${" in value:
        # python-dotenv (read by pydantic-settings) expands ${…} even inside quotes.
        raise ValueError(f"{value!r} cannot be written to an env file: it contains ${{")
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n").replace("\r", "\\r") + '"'


def _closing_quote(text: str, quote_char: str) -> int:
    """Index of the quote closing a value that starts with `quote_char`; -1 when unclosed."""
    index = 1
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char == quote_char:
            return index
        index += 1
    return -1


def _env_entries(text: str) -> list[tuple[str | None, str]]:
    """`text` split into (key or None, raw text) entries; quoted values may span lines."""
    lines = text.splitlines(keepends=True)
    entries: list[tuple[str | None, str]] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        match = _ENV_ASSIGNMENT.fullmatch(line)
        if match is None or line.lstrip().startswith("#"):
            entries.append((None, line))
            continue
        value, end = match.group(2), index
        if value[:1] in ("'", '"'):
            while _closing_quote(value, value[0]) < 0 and end < len(lines):
                value += lines[end]
                end += 1
            if _closing_quote(value, value[0]) >= 0:  # else a stray quote: one line only
                line, index = "".join(lines[index - 1 : end]), end
        entries.append((match.group(1), line))
    return entries


def merge_env(existing_text: str, updates: Mapping[str, str | None]) -> str:
    """`existing_text` with each key of `updates` set (None removes it); other lines kept.

    Raises ValueError for a value python-dotenv would not read back unchanged.
    """
    out: list[str] = []
    done: set[str] = set()
    for key, raw in _env_entries(existing_text):
        if key is None or key not in updates:
            out.append(raw)
            continue
        value = updates[key]
        if value is not None and key not in done:
            out.append(f"{key}={_format_env_value(value)}\n")
        done.add(key)
    text = "".join(out)
    added = [
        f"{key}={_format_env_value(value)}\n"
        for key, value in updates.items()
        if value is not None and key not in done
    ]
    if added and text and not text.endswith("\n"):
        text += "\n"
    return text + "".join(added)


# --- GitHub and files ------------------------------------------------------------------------


@dataclass(frozen=True)
class RegisteredApp:
    """What GitHub answers when it creates the App (the secrets stay out of repr)."""

    id: int
    slug: str
    name: str
    html_url: str
    owner: str
    pem: str = field(repr=False)
    webhook_secret: str | None = field(repr=False)
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)

    @property
    def install_url(self) -> str:
        return f"{self.html_url.rstrip('/')}/installations/new"


@dataclass(frozen=True)
class SetupResult:
    """A registered App and where its settings were written."""

    app: RegisteredApp
    env_file: Path
    key_file: Path
    api_url: str
    updates: dict[str, str | None] = field(default_factory=dict, repr=False)

    def env_updates(self) -> dict[str, str | None]:
        return self.updates


def load_manifest(path: Path = MANIFEST_PATH) -> dict[str, Any]:
    """The manifest template (app.yml)."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SetupError(f"cannot read the App manifest {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise SetupError(f"the App manifest {path} is not a mapping")
    return data


class ManifestOwner(Tolerant):
    login: str | None = None
    slug: str | None = None
    """An enterprise owns the App: it has a slug, no login."""


class ManifestAnswer(Tolerant):
    """The fields of GitHub's answer to a manifest conversion that setup reads."""

    id: int
    slug: str | None = None
    name: str | None = None
    html_url: str
    owner: ManifestOwner | None = None
    pem: str
    webhook_secret: str | None = None
    client_id: str | None = None
    client_secret: str | None = None


def _error_message(exc: RequestFailed) -> str:
    with contextlib.suppress(ValueError):
        body = exc.response.raw_response.json()
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            return str(body["message"])
    return exc.response.reason_phrase or "no details"


async def exchange_code(
    api_url: str, code: str, *, timeout: float = EXCHANGE_TIMEOUT_SECONDS
) -> RegisteredApp:
    """Turn the manifest flow's one-time `code` into the new App's credentials."""
    # Imported here: githubkit takes a fifth of a second to import, and `trimo run` shares the CLI.
    from githubkit import GitHub
    from githubkit.exception import RequestError, RequestFailed

    if not _CODE.fullmatch(code):
        raise ConversionError("GitHub sent back no usable code", hint="start `trimo setup` again")
    github = GitHub(base_url=api_url, timeout=timeout, auto_retry=False, http_cache=False)
    try:
        response = await github.arequest("POST", f"/app-manifests/{code}/conversions")
        data = ManifestAnswer.model_validate(response.json())
    except RequestFailed as exc:
        status = exc.response.status_code
        if status == 404:
            raise ConversionError(
                f"GitHub does not know this code (404: {_error_message(exc)})",
                hint="a code works once and expires after an hour: start `trimo setup` again",
            ) from exc
        raise ConversionError(
            f"GitHub refused to create the App ({status}: {_error_message(exc)})",
            hint="start `trimo setup` again",
        ) from exc
    except RequestError as exc:
        raise ConversionError(
            f"cannot reach GitHub at {api_url}: {exc.exc}",
            hint="check the address given to --github-url and your network",
        ) from exc
    except ValueError as exc:
        raise ConversionError(f"unexpected answer from {api_url}: {exc}") from exc
    slug = data.slug or data.html_url.rstrip("/").rsplit("/")[-1]
    owner = data.owner or ManifestOwner()
    return RegisteredApp(
        id=data.id,
        slug=slug,
        name=data.name or slug,
        html_url=data.html_url,
        owner=owner.login or owner.slug or "",
        pem=data.pem,
        webhook_secret=data.webhook_secret,
        client_id=data.client_id,
        client_secret=data.client_secret,
    )


def env_updates(
    app: RegisteredApp,
    key_file: Path,
    api_url: str,
    *,
    github_url: str = "https://github.com",
    public_url: str | None = None,
) -> dict[str, str | None]:
    """The settings `trimo serve` and `trimo worker` need for `app`; the dashboard's sign-in
    needs the App's OAuth client id and secret, GitHub's web address and Trimo's own."""
    return {
        "TRIMO_GITHUB_APP_ID": str(app.id),
        "TRIMO_GITHUB_PRIVATE_KEY_PATH": str(key_file),
        # An inline key would win over the file: drop one left by an earlier App.
        "TRIMO_GITHUB_PRIVATE_KEY": None,
        # None (GitHub made no secret) drops an earlier App's, which could never match.
        "TRIMO_WEBHOOK_SECRET": app.webhook_secret,
        "TRIMO_APP_SLUG": app.slug,
        "TRIMO_GITHUB_API_URL": api_url,
        "TRIMO_GITHUB_URL": github_url.rstrip("/"),
        "TRIMO_GITHUB_CLIENT_ID": app.client_id,
        "TRIMO_GITHUB_CLIENT_SECRET": app.client_secret,
    } | ({} if public_url is None else {"TRIMO_PUBLIC_URL": public_url})


def _has_value(env_text: str, key: str) -> bool:
    return any(name == key and raw.split("=", 1)[1].strip() for name, raw in _env_entries(env_text))


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path` atomically, readable by its owner only."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def save_registration(
    app: RegisteredApp,
    env_file: Path,
    api_url: str,
    *,
    github_url: str = "https://github.com",
    public_url: str | None = None,
) -> SetupResult:
    """Write the App's key (mode 0600) next to `env_file`, and merge its settings into it,
    with a new session secret for the dashboard unless the file has one."""
    env_file = env_file.expanduser().absolute()
    slug = app.slug if _SLUG.fullmatch(app.slug) else "trimo"
    key_file = env_file.parent / f"{slug}.private-key.pem"
    try:
        existing = env_file.read_text() if env_file.exists() else ""
    except OSError as exc:
        raise SetupError(f"cannot read {env_file}: {exc.strerror or exc}") from exc
    updates = env_updates(app, key_file, api_url, github_url=github_url, public_url=public_url)
    if not _has_value(existing, "TRIMO_SESSION_SECRET"):
        updates["TRIMO_SESSION_SECRET"] = secrets.token_urlsafe(32)
    try:
        merged = merge_env(existing, updates)
    except ValueError as exc:
        raise SetupError(f"cannot write the settings: {exc}") from exc
    try:
        _write_private(key_file, app.pem)
    except OSError as exc:
        raise SetupError(f"cannot write {key_file}: {exc.strerror or exc}") from exc
    try:
        _write_private(env_file, merged)
    except OSError as exc:
        key_file.unlink(missing_ok=True)
        raise SetupError(f"cannot write {env_file}: {exc.strerror or exc}") from exc
    return SetupResult(
        app=app, env_file=env_file, key_file=key_file, api_url=api_url, updates=updates
    )


# --- the local page --------------------------------------------------------------------------


@dataclass(frozen=True)
class SetupOptions:
    """What `trimo setup` was asked for."""

    webhook_url: str
    github_url: str = "https://github.com"
    org: str | None = None
    port: int = DEFAULT_PORT
    env_file: Path = Path(".env")
    manifest_path: Path = MANIFEST_PATH
    timeout: float = EXCHANGE_TIMEOUT_SECONDS
    workflows: bool = False


def _page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
    response = HTMLResponse(render(f"setup/{template}.html.j2", **context), status_code=status)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    return response


class SetupFlow:
    """One registration: the manifest, its CSRF state, and the page's two routes."""

    def __init__(self, options: SetupOptions, page_url: str) -> None:
        self.options = options
        self.api_url = api_url_for(options.github_url)
        self.state = secrets.token_urlsafe(32)
        self.manifest = build_manifest(
            load_manifest(options.manifest_path),
            webhook_url_for(options.webhook_url),
            f"{page_url.rstrip('/')}/callback",
            workflows=options.workflows,
        )
        self.action_url = (
            f"{new_app_url(options.github_url, options.org)}?{urlencode({'state': self.state})}"
        )
        self.result: SetupResult | None = None
        self.on_done: Callable[[], None] = lambda: None
        self._lock = asyncio.Lock()
        self.app = Starlette(
            routes=[Route("/", self.start), Route("/callback", self.callback)],
            middleware=[
                # A page elsewhere could otherwise reach this one through DNS rebinding.
                Middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost"]),
            ],
        )

    async def start(self, request: Request) -> HTMLResponse:
        if self.result is not None:
            return self._done()
        return _page(
            "start",
            action_url=self.action_url,
            manifest_json=json.dumps(self.manifest),
            manifest=self.manifest,
            target=self.action_url.split("?")[0].removesuffix("/settings/apps/new"),
        )

    async def callback(self, request: Request) -> HTMLResponse:
        state = request.query_params.get("state", "")
        if not secrets.compare_digest(state.encode(), self.state.encode()):
            return _page(
                "error",
                400,
                title="This answer does not belong to this setup",
                message="The state GitHub sent back does not match the one this page sent.",
                hint="Start again from this page; do not reuse links from an earlier setup.",
            )
        async with self._lock:
            if self.result is not None:
                return self._done()
            code = request.query_params.get("code", "")
            try:
                app = await exchange_code(self.api_url, code, timeout=self.options.timeout)
            except ConversionError as exc:
                title = "GitHub did not create the App"
                return _page("error", 502, title=title, message=exc.message, hint=exc.hint)
            try:
                self.result = save_registration(
                    app,
                    self.options.env_file,
                    self.api_url,
                    github_url=self.options.github_url,
                    public_url=_origin(webhook_url_for(self.options.webhook_url)),
                )
            except SetupError as exc:
                return _page(
                    "error",
                    500,
                    title="The App's settings could not be saved",
                    message=f"GitHub created the App {app.slug}, but {exc.message}.",
                    hint=f"Delete {app.slug} in your GitHub App settings (its key is lost), "
                    "fix the problem and start again.",
                )
        return self._done(background=BackgroundTask(self.on_done))

    def _done(self, background: BackgroundTask | None = None) -> HTMLResponse:
        assert self.result is not None
        response = _page("done", result=self.result, app=self.result.app)
        response.background = background
        return response


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_started()


class SetupServer:
    """The setup page on 127.0.0.1:<port>, serving until the App is registered or stopped."""

    def __init__(self, options: SetupOptions) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind(("127.0.0.1", options.port))
        except OSError as exc:
            self._socket.close()
            raise SetupError(
                f"cannot listen on 127.0.0.1:{options.port}: {exc.strerror or exc}",
                hint="choose another port with --port",
            ) from exc
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        try:
            self.flow = SetupFlow(options, self.url)
        except BaseException:
            self._socket.close()
            raise
        self._on_ready: Callable[[str], None] = lambda url: None
        config = uvicorn.Config(
            self.flow.app,
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=5,
        )
        self._server = _Server(config, on_started=lambda: self._on_ready(self.url + "/"))
        self.flow.on_done = self.stop

    @property
    def started(self) -> bool:
        return self._server.started

    def run(self, on_ready: Callable[[str], None] | None = None) -> SetupResult | None:
        """Serve until the App is registered (its result) or the server is stopped (None)."""
        if on_ready is not None:
            self._on_ready = on_ready
        try:
            self._server.run(sockets=[self._socket])
        finally:
            self._socket.close()
        return self.flow.result

    def stop(self) -> None:
        self._server.should_exit = True


# --- the command -----------------------------------------------------------------------------

console = Console(stderr=True)


def _open_browser(url: str) -> None:
    # A console browser would block the server's event loop if opened from it.
    threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()


def setup_command(
    webhook_url: Annotated[
        str,
        typer.Option(
            help="Public address of `trimo serve`; GitHub sends webhooks to <it>/webhooks/github.",
            prompt="Public address of `trimo serve` (GitHub sends webhooks there)",
        ),
    ],
    github_url: Annotated[
        str, typer.Option(help="Web address of GitHub, or of your GitHub Enterprise Server.")
    ] = "https://github.com",
    org: Annotated[
        str | None, typer.Option(help="Register the App for this organization, not for you.")
    ] = None,
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port of the local setup page.")
    ] = DEFAULT_PORT,
    env_file: Annotated[
        Path, typer.Option(help="Env file to write the settings to (merged, kept private).")
    ] = Path(".env"),
    open_browser: Annotated[
        bool, typer.Option("--open/--no-open", help="Open the setup page in a browser.")
    ] = True,
    workflows: Annotated[
        bool,
        typer.Option(
            "--workflows/--no-workflows",
            help="Also ask for the `workflows` permission, so agents may change "
            ".github/workflows (GitHub refuses pushes of workflow files without it).",
        ),
    ] = False,
) -> None:
    """Register Trimo's GitHub App (app.yml) on GitHub and write its settings to the env file."""
    options = SetupOptions(
        webhook_url=webhook_url,
        github_url=github_url,
        org=org,
        port=port,
        env_file=env_file,
        workflows=workflows,
    )
    try:
        server = SetupServer(options)
    except SetupError as exc:
        console.print(f"[bold red]error:[/] {exc.message}")
        if exc.hint:
            console.print(f"  [yellow]→[/] {exc.hint}")
        raise typer.Exit(1) from exc

    def ready(url: str) -> None:
        console.print(f"Open [bold]{url}[/] to register the App (Ctrl-C to cancel).")
        if open_browser:
            _open_browser(url)

    result = server.run(on_ready=ready)
    if result is None:
        console.print("[yellow]setup cancelled:[/] nothing was written")
        raise typer.Exit(1)
    app = result.app
    console.print(f"[green]registered[/] {app.name} (id {app.id}, {app.html_url})")
    console.print(f"  settings: {result.env_file}")
    console.print(f"  private key: {result.key_file} (mode 0600)")
    if app.webhook_secret is None:
        console.print("  [yellow]GitHub returned no webhook secret:[/] set one on the App's page")
        console.print("  and the same value as TRIMO_WEBHOOK_SECRET")
    overridden = sorted(key for key in result.env_updates() if key in os.environ)
    if overridden:
        console.print(f"  [yellow]set in your environment, overriding the file:[/] {overridden}")
    console.print(f"Next: install it on your repositories: [bold]{app.install_url}[/]")
    public_url = result.updates.get("TRIMO_PUBLIC_URL")
    if app.client_id and public_url:
        console.print(f"The dashboard: [bold]{public_url}/[/] (people sign in with GitHub).")
    if result.env_file != Path.cwd() / ".env":
        console.print(f"Start `trimo serve` and `trimo worker` in {result.env_file.parent}, or")
        console.print("export those settings: they read .env from the directory they start in.")
