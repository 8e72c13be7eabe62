"""`trimo setup`: the manifest, the pure pieces, and the whole flow against a GitHub stand-in.

The stand-in plays GitHub's two parts of the manifest flow: the new-App page the browser posts
the manifest to (it answers, as GitHub does once the person confirms, with a redirect to
`redirect_url?code=…&state=…`), and `POST /api/v3/app-manifests/{code}/conversions` (a GitHub
Enterprise Server address), whose answer has the shape of GitHub's documented example and is
checked against githubkit's model.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import socket
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import uvicorn
import yaml
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from dotenv import dotenv_values
from githubkit_schemas.latest import models as m
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from typer.testing import CliRunner

from app.ops.cli import cli
from app.ops.setup import (
    MANIFEST_PATH,
    RegisteredApp,
    SetupError,
    SetupOptions,
    SetupResult,
    SetupServer,
    api_url_for,
    build_manifest,
    merge_env,
    new_app_url,
    save_registration,
    webhook_url_for,
)
from app.settings import AppSettings
from tests.fakegithub import generate_key_pair
from tests.fakegithub.validation import check

WEBHOOK = "https://trimo.example.com/webhooks/github"
MINIMAL_PERMISSIONS = {
    "contents": "write",
    "pull_requests": "write",
    "issues": "write",
    "checks": "write",
    "metadata": "read",
}
HANDLED_EVENTS = {
    "issue_comment",
    "issues",
    "pull_request",
    "pull_request_review_comment",
    "check_run",
    "check_suite",
    "push",
}
# GitHub sends these to every App and refuses a manifest that lists them.
ALWAYS_DELIVERED = {"installation", "installation_repositories"}
# The permission an App needs before GitHub lets it subscribe to each event.
EVENT_PERMISSION = {
    "issue_comment": "issues",
    "issues": "issues",
    "pull_request": "pull_requests",
    "pull_request_review_comment": "pull_requests",
    "check_run": "checks",
    "check_suite": "checks",
    "push": "contents",
}
SETTINGS_KEYS = (
    "TRIMO_GITHUB_APP_ID",
    "TRIMO_GITHUB_PRIVATE_KEY",
    "TRIMO_GITHUB_PRIVATE_KEY_PATH",
    "TRIMO_WEBHOOK_SECRET",
    "TRIMO_APP_SLUG",
    "TRIMO_GITHUB_API_URL",
)


# --- app.yml ---------------------------------------------------------------------------------


def app_yml() -> dict[str, Any]:
    data = yaml.safe_load(MANIFEST_PATH.read_text())
    assert isinstance(data, dict)
    return data


def test_manifest_asks_for_exactly_the_minimal_permissions() -> None:
    assert app_yml()["default_permissions"] == MINIMAL_PERMISSIONS


def test_manifest_subscribes_to_the_handled_events_and_nothing_github_refuses() -> None:
    events = app_yml()["default_events"]
    assert set(events) == HANDLED_EVENTS
    assert len(events) == len(set(events))
    assert not set(events) & ALWAYS_DELIVERED


def test_every_subscribed_event_is_covered_by_a_granted_permission() -> None:
    manifest = app_yml()
    for event in manifest["default_events"]:
        assert EVENT_PERMISSION[event] in manifest["default_permissions"], event


def test_every_event_with_a_handler_reaches_the_app() -> None:
    from app.conversation.handlers import router
    from app.dashboard.requests import DASHBOARD_EVENT
    from app.edge.events import VERIFY_EVENT

    routed = {event for event, _ in router.routes()}
    # The dashboard's requests and failed checks of verify: travel as deliveries of events
    # of Trimo's own, which GitHub never sends.
    own = {DASHBOARD_EVENT, VERIFY_EVENT}
    missing = routed - set(app_yml()["default_events"]) - ALWAYS_DELIVERED - own
    assert routed and not missing, f"handled but not subscribed: {sorted(missing)}"


def test_manifest_is_private_with_an_active_webhook_and_no_user_authorisation() -> None:
    manifest = app_yml()
    assert manifest["public"] is False
    assert manifest["hook_attributes"]["active"] is True
    assert manifest["name"] and manifest["description"]
    for unused in ("callback_urls", "request_oauth_on_install", "setup_url", "redirect_url"):
        assert unused not in manifest


# --- pure pieces -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("github_url", "api_url"),
    [
        ("https://github.com", "https://api.github.com"),
        ("https://github.com/", "https://api.github.com"),
        ("HTTPS://GitHub.com", "https://api.github.com"),
        ("https://www.github.com", "https://api.github.com"),
        (" https://github.com ", "https://api.github.com"),
        ("https://ghe.example.com", "https://ghe.example.com/api/v3"),
        ("https://ghe.example.com/", "https://ghe.example.com/api/v3"),
        ("http://ghe.internal:8080", "http://ghe.internal:8080/api/v3"),
        ("https://octo-corp.ghe.com", "https://api.octo-corp.ghe.com"),
    ],
)
def test_api_url_for(github_url: str, api_url: str) -> None:
    assert api_url_for(github_url) == api_url


@pytest.mark.parametrize(
    "github_url",
    [
        "github.com",
        "ftp://github.com",
        "https://",
        "https://github.com/?tab=1",
        "https://user:pw@ghe.example.com",
        "https://api.github.com",
        "",
    ],
)
def test_api_url_for_refuses_what_is_not_a_github_web_address(github_url: str) -> None:
    with pytest.raises(SetupError):
        api_url_for(github_url)


@pytest.mark.parametrize(
    ("github_url", "org", "url"),
    [
        ("https://github.com", None, "https://github.com/settings/apps/new"),
        ("https://github.com/", None, "https://github.com/settings/apps/new"),
        ("https://www.github.com", None, "https://github.com/settings/apps/new"),
        (
            "https://github.com",
            "my-org",
            "https://github.com/organizations/my-org/settings/apps/new",
        ),
        ("https://ghe.example.com", None, "https://ghe.example.com/settings/apps/new"),
        (
            "https://ghe.example.com/",
            "Platform_Team",
            "https://ghe.example.com/organizations/Platform_Team/settings/apps/new",
        ),
    ],
)
def test_new_app_url(github_url: str, org: str | None, url: str) -> None:
    assert new_app_url(github_url, org) == url


@pytest.mark.parametrize("org", ["", "a/b", "../settings", "-org", "my org", "org?x=1"])
def test_new_app_url_refuses_what_is_not_an_organization(org: str) -> None:
    with pytest.raises(SetupError):
        new_app_url("https://github.com", org)


@pytest.mark.parametrize(
    ("given", "webhook"),
    [
        ("https://trimo.example.com", WEBHOOK),
        ("https://trimo.example.com/", WEBHOOK),
        (WEBHOOK, WEBHOOK),
        ("https://abc.smee.io/XyZ", "https://abc.smee.io/XyZ"),
        ("http://10.0.0.5:8000", "http://10.0.0.5:8000/webhooks/github"),
    ],
)
def test_webhook_url_for(given: str, webhook: str) -> None:
    assert webhook_url_for(given) == webhook


@pytest.mark.parametrize("given", ["trimo.example.com", "ftp://x.example", "https://u:p@x.example"])
def test_webhook_url_for_refuses_what_github_cannot_post_to(given: str) -> None:
    with pytest.raises(SetupError):
        webhook_url_for(given)


def test_build_manifest_fills_the_urls_and_leaves_the_template_alone() -> None:
    template = app_yml()
    before = json.dumps(template, sort_keys=True)
    manifest = build_manifest(template, WEBHOOK, "http://127.0.0.1:8765/callback")
    assert json.dumps(template, sort_keys=True) == before
    assert manifest["hook_attributes"] == {"url": WEBHOOK, "active": True}
    assert manifest["redirect_url"] == "http://127.0.0.1:8765/callback"
    assert manifest["url"] == "https://trimo.example.com"
    assert manifest["default_permissions"] == MINIMAL_PERMISSIONS
    assert manifest["default_events"] == template["default_events"]
    assert manifest["name"] == template["name"]


def test_workflows_is_asked_for_only_on_request() -> None:
    template = app_yml()
    manifest = build_manifest(template, WEBHOOK, "http://127.0.0.1:1/callback", workflows=True)
    assert manifest["default_permissions"] == {**MINIMAL_PERMISSIONS, "workflows": "write"}
    assert "workflows" not in template["default_permissions"]


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ({}, {"url": "https://trimo.example.com", "active": True}),
        (
            {"url": "https://docs.example.com", "hook_attributes": {"active": False}},
            {"url": "https://docs.example.com", "active": False},
        ),
    ],
)
def test_build_manifest_homepage_and_hook(
    template: dict[str, Any], expected: dict[str, Any]
) -> None:
    manifest = build_manifest(template, WEBHOOK, "http://127.0.0.1:1/callback")
    assert manifest["url"] == expected["url"]
    assert manifest["hook_attributes"] == {"url": WEBHOOK, "active": expected["active"]}


@pytest.mark.parametrize(
    ("existing", "updates", "merged"),
    [
        ("", {"A": "1"}, "A=1\n"),
        ("B=2\n", {"A": "1"}, "B=2\nA=1\n"),
        ("B=2", {"A": "1"}, "B=2\nA=1\n"),
        ("A=old\nB=2\n", {"A": "new"}, "A=new\nB=2\n"),
        ("export A=old\n", {"A": "new"}, "A=new\n"),
        ("  A = old # note\n", {"A": "new"}, "A=new\n"),
        ("A=1\nB=2\nA=3\n", {"A": "9"}, "A=9\nB=2\n"),
        ("# A=commented\nA=1\n", {"A": "2"}, "# A=commented\nA=2\n"),
        ("\n# settings\n\nB=2\n", {"A": "1"}, "\n# settings\n\nB=2\nA=1\n"),
        ("AB=1\nA_=2\n", {"A": "3"}, "AB=1\nA_=2\nA=3\n"),
        ("A=1\nB=2\n", {"A": None}, "B=2\n"),
        ("B=2\n", {"A": None}, "B=2\n"),
        ('K="-----BEGIN KEY-----\nabc\n-----END KEY-----"\nB=2\n', {"K": None}, "B=2\n"),
        ("K='line one\nline two'\nB=2\n", {"K": "x"}, "K=x\nB=2\n"),
        ('K="say \\"hi\\"\nthere"\nB=2\n', {"K": "x"}, "K=x\nB=2\n"),
        ('K="unclosed\nB=2\n', {"K": "x"}, "K=x\nB=2\n"),
        ("A=1\n", {"B": "x y", "C": "/p/k.pem"}, 'A=1\nB="x y"\nC=/p/k.pem\n'),
    ],
)
def test_merge_env(existing: str, updates: dict[str, str | None], merged: str) -> None:
    assert merge_env(existing, updates) == merged


@pytest.mark.parametrize(
    "value",
    [
        "12345",
        "e340154128314309424b7c8e90325147d99fdafa",
        "https://ghe.example.com/api/v3",
        "/home/me/my project/trimo.private-key.pem",
        "it's",
        'say "hi"',
        "a#b $HOME $",
        "C:\\keys\\trimo.pem",
        "two\nlines",
        "",
    ],
)
def test_merged_values_read_back_unchanged(value: str) -> None:
    text = merge_env("OTHER=1\n", {"TRIMO_X": value})
    assert dotenv_values(stream=io.StringIO(text)) == {"OTHER": "1", "TRIMO_X": value}


def test_a_value_dotenv_would_expand_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot be written"):
        merge_env("", {"TRIMO_X": "/keys/${USER}.pem"})


# --- the GitHub stand-in ---------------------------------------------------------------------


def documented_owner() -> dict[str, Any]:
    """The owner in GitHub's documented answer of apps/create-from-manifest."""
    api = "https://api.github.com/users/octocat"
    return {
        "login": "github",
        "id": 1,
        "node_id": "MDEyOk9yZ2FuaXphdGlvbjE=",
        "url": "https://api.github.com/orgs/github",
        "repos_url": "https://api.github.com/orgs/github/repos",
        "events_url": "https://api.github.com/orgs/github/events",
        "avatar_url": "https://github.com/images/error/octocat_happy.gif",
        "gravatar_id": "",
        "html_url": "https://github.com/octocat",
        "followers_url": f"{api}/followers",
        "following_url": f"{api}/following{{/other_user}}",
        "gists_url": f"{api}/gists{{/gist_id}}",
        "starred_url": f"{api}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"{api}/subscriptions",
        "organizations_url": f"{api}/orgs",
        "received_events_url": f"{api}/received_events",
        "type": "User",
        "site_admin": True,
    }


@dataclass
class FakeGitHubSite:
    """GitHub's side of the manifest flow, for one test."""

    base_url: str = ""
    manifests: list[dict[str, Any]] = field(default_factory=list)
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)
    forced: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    conversions: list[str] = field(default_factory=list)
    answers: list[dict[str, Any]] = field(default_factory=list)
    next_id: int = 1

    def asgi(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/settings/apps/new", self.new_app, methods=["POST"]),
                Route("/organizations/{org}/settings/apps/new", self.new_app, methods=["POST"]),
                Route("/api/v3/app-manifests/{code}/conversions", self.convert, methods=["POST"]),
            ]
        )

    async def new_app(self, request: Request) -> Response:
        """The person confirms the App on GitHub's page; GitHub creates it and redirects back."""
        assert request.headers["content-type"] == "application/x-www-form-urlencoded"
        form = parse_qs((await request.body()).decode(), strict_parsing=True)
        manifest = json.loads(form["manifest"][0])
        self.manifests.append(manifest)
        refused = set(manifest.get("default_events", [])) & ALWAYS_DELIVERED
        if refused or not manifest.get("url") or not manifest["hook_attributes"].get("url"):
            return Response(f"Default events unsupported: {sorted(refused)}", status_code=422)
        code = self.create_app(manifest)
        query = httpx.QueryParams({"code": code, "state": request.query_params.get("state", "")})
        return RedirectResponse(f"{manifest['redirect_url']}?{query}", status_code=302)

    def create_app(self, manifest: dict[str, Any]) -> str:
        """Register an App from `manifest`; the one-time code that converts it."""
        slug = re.sub(r"[^a-z0-9]+", "-", manifest["name"].lower()).strip("-")
        app_id, self.next_id = self.next_id, self.next_id + 1
        code = secrets.token_hex(20)
        self.pending[code] = {
            "id": app_id,
            "slug": slug,
            "node_id": "MDxOkludGVncmF0aW9uMQ==",
            "owner": documented_owner(),
            "name": manifest["name"],
            "description": manifest.get("description", ""),
            "external_url": manifest["url"],
            "html_url": f"{self.base_url}/apps/{slug}",
            "created_at": "2017-07-08T16:18:44-04:00",
            "updated_at": "2017-07-08T16:18:44-04:00",
            "permissions": manifest["default_permissions"],
            "events": manifest["default_events"],
            "client_id": "Iv1.8a61f9b3a7aba766",
            "client_secret": secrets.token_hex(20),
            "webhook_secret": secrets.token_hex(20),
            "pem": generate_key_pair()[0],
        }
        return code

    async def convert(self, request: Request) -> JSONResponse:
        code = request.path_params["code"]
        self.conversions.append(code)
        if code in self.forced:
            status, body = self.forced[code]
            return JSONResponse(body, status_code=status)
        answer = self.pending.pop(code, None)  # a code works once
        if answer is None:
            return JSONResponse(
                {
                    "message": "Not Found",
                    "documentation_url": "https://docs.github.com/rest/apps/apps#create-a-github-app-from-a-manifest",
                    "status": "404",
                },
                status_code=404,
            )
        self.answers.append(answer)
        return JSONResponse(answer, status_code=201)


@contextmanager
def serving(app: Any, sock: socket.socket | None = None) -> Iterator[str]:
    """Serve the ASGI `app` on a free loopback port in a thread; yield its base URL."""
    if sock is None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def site() -> Iterator[FakeGitHubSite]:
    fake = FakeGitHubSite()
    with serving(fake.asgi()) as url:
        fake.base_url = url
        yield fake


@dataclass
class RunningSetup:
    server: SetupServer
    thread: threading.Thread
    outcome: list[SetupResult | None]

    @property
    def url(self) -> str:
        return self.server.url

    def finished(self, timeout: float = 10) -> SetupResult | None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the setup page is still serving"
        return self.outcome[0]


@contextmanager
def running_setup(options: SetupOptions) -> Iterator[RunningSetup]:
    server = SetupServer(options)
    outcome: list[SetupResult | None] = []
    thread = threading.Thread(target=lambda: outcome.append(server.run()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "setup page did not start"
        time.sleep(0.01)
    try:
        yield RunningSetup(server, thread, outcome)
    finally:
        server.stop()
        thread.join(timeout=10)


class FormReader(HTMLParser):
    """The first form's action and its inputs, as a browser would submit them."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.method: str | None = None
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form" and self.action is None:
            self.action, self.method = values.get("action"), values.get("method")
        elif tag == "input" and "name" in values:
            self.fields[values["name"]] = values.get("value", "")


def read_form(html: str) -> FormReader:
    reader = FormReader()
    reader.feed(html)
    assert reader.action is not None, "the page has no form"
    return reader


def browse(client: httpx.Client, page_url: str) -> httpx.Response:
    """What the browser does: load the page, post its form to GitHub, follow GitHub back."""
    page = client.get(page_url)
    assert page.status_code == 200
    form = read_form(page.text)
    assert form.method == "post"
    assert form.action is not None
    to_github = client.post(form.action, data=form.fields)
    assert to_github.status_code == 302, to_github.text
    return client.get(to_github.headers["location"])


def written_files(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings read back come from the env file only."""
    for key in SETTINGS_KEYS:
        monkeypatch.delenv(key, raising=False)


# --- the whole flow --------------------------------------------------------------------------


def test_the_page_posts_the_manifest_to_githubs_new_app_page(
    site: FakeGitHubSite, tmp_path: Path
) -> None:
    options = SetupOptions(
        webhook_url="https://trimo.example.com",
        github_url=site.base_url,
        env_file=tmp_path / ".env",
        port=0,
    )
    with running_setup(options) as setup, httpx.Client() as client:
        page = client.get(setup.url + "/")
        assert page.status_code == 200
        assert page.headers["cache-control"] == "no-store"
        form = read_form(page.text)
        action = httpx.URL(form.action or "")
        state = action.params["state"]
        assert len(state) >= 32
        assert str(action.copy_with(query=None)) == f"{site.base_url}/settings/apps/new"
        manifest = json.loads(form.fields["manifest"])
        assert manifest == build_manifest(app_yml(), WEBHOOK, f"{setup.url}/callback")
        assert 'document.getElementById("manifest-form").submit()' in page.text
        assert "<button" in page.text

        again = read_form(client.get(setup.url + "/").text)
        assert again.action == form.action, "one setup, one state"
    assert written_files(tmp_path) == []


def test_an_organization_gets_its_own_new_app_page(site: FakeGitHubSite) -> None:
    options = SetupOptions(webhook_url=WEBHOOK, github_url=site.base_url, org="my-org", port=0)
    with running_setup(options) as setup:
        form = read_form(httpx.get(setup.url + "/").text)
    assert (form.action or "").startswith(
        f"{site.base_url}/organizations/my-org/settings/apps/new?state="
    )


def test_setup_registers_the_app_and_writes_its_settings(
    site: FakeGitHubSite, tmp_path: Path, clean_env: None, capfd: pytest.CaptureFixture[str]
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# my settings\nTRIMO_REDIS_URL=redis://10.0.0.2:6379/0\n"
        'TRIMO_GITHUB_PRIVATE_KEY="-----BEGIN OLD KEY-----\nold\n-----END OLD KEY-----"\n'
        "TRIMO_GITHUB_APP_ID=999\n"
    )
    options = SetupOptions(
        webhook_url="https://trimo.example.com", github_url=site.base_url, env_file=env_file, port=0
    )
    with running_setup(options) as setup, httpx.Client() as client:
        done = browse(client, setup.url + "/")
        result = setup.finished()

    answer = site.answers[0]
    assert done.status_code == 200
    assert f'href="{site.base_url}/apps/trimo/installations/new"' in done.text
    assert 'href="https://trimo.example.com/"' in done.text  # the dashboard
    for secret in ("webhook_secret", "client_secret", "pem"):
        assert answer[secret] not in done.text
    assert result is not None
    assert (result.app.id, result.app.slug) == (answer["id"], "trimo")
    assert result.app.install_url == f"{site.base_url}/apps/trimo/installations/new"
    assert answer["pem"] not in repr(result)

    manifest = site.manifests[0]
    assert manifest["hook_attributes"]["url"] == WEBHOOK
    assert manifest["redirect_url"] == f"{setup.url}/callback"
    assert manifest["default_permissions"] == MINIMAL_PERMISSIONS
    assert check(m.AppManifestsCodeConversionsPostResponse201, answer) == []

    key_file = tmp_path / "trimo.private-key.pem"
    assert written_files(tmp_path) == [".env", "trimo.private-key.pem"]
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert key_file.read_text() == answer["pem"]
    assert load_pem_private_key(key_file.read_bytes(), password=None).key_size == 2048

    text = env_file.read_text()
    assert text.startswith("# my settings\nTRIMO_REDIS_URL=redis://10.0.0.2:6379/0\n")
    assert "OLD KEY" not in text
    assert "TRIMO_GITHUB_APP_ID=999" not in text.splitlines()  # the secrets are random hex
    settings = AppSettings(_env_file=env_file)  # type: ignore[call-arg]
    assert settings.github_app_id == answer["id"]
    assert settings.github_private_key is None
    assert settings.github_private_key_path == key_file
    assert settings.private_key() == answer["pem"]
    assert settings.require_webhook_secret() == answer["webhook_secret"]
    assert settings.app_slug == "trimo"
    assert settings.github_api_url == f"{site.base_url}/api/v3"
    assert settings.redis_url == "redis://10.0.0.2:6379/0"
    assert manifest["callback_urls"] == ["https://trimo.example.com/oauth/callback"]
    assert settings.github_client_id == answer["client_id"]
    assert settings.github_client_secret is not None
    assert settings.github_client_secret.get_secret_value() == answer["client_secret"]
    assert settings.github_url == site.base_url
    assert settings.public_url == "https://trimo.example.com"
    assert settings.session_secret is not None
    assert len(settings.session_secret.get_secret_value()) >= 32

    printed = capfd.readouterr()
    for secret in ("webhook_secret", "client_secret", "pem"):
        assert answer[secret] not in printed.out + printed.err


def test_a_wrong_state_is_refused_and_writes_nothing(site: FakeGitHubSite, tmp_path: Path) -> None:
    options = SetupOptions(
        webhook_url=WEBHOOK, github_url=site.base_url, env_file=tmp_path / ".env", port=0
    )
    code = site.create_app(build_manifest(app_yml(), WEBHOOK, "http://127.0.0.1:1/callback"))
    with running_setup(options) as setup, httpx.Client(base_url=setup.url) as client:
        for query in (
            {"code": code, "state": "forged"},
            {"code": code},
            {"code": code, "state": ""},
        ):
            refused = client.get("/callback", params=query)
            assert refused.status_code == 400
            assert "does not match" in refused.text
        assert site.conversions == []
        assert written_files(tmp_path) == []
        assert setup.thread.is_alive()

        state = httpx.URL(read_form(client.get("/").text).action or "").params["state"]
        done = client.get("/callback", params={"code": code, "state": state})
        assert done.status_code == 200
        assert setup.finished() is not None
    assert written_files(tmp_path) == [".env", "trimo.private-key.pem"]


def test_an_unknown_or_used_code_shows_a_clear_page_and_setup_can_start_again(
    site: FakeGitHubSite, tmp_path: Path
) -> None:
    options = SetupOptions(
        webhook_url=WEBHOOK, github_url=site.base_url, env_file=tmp_path / ".env", port=0
    )
    with running_setup(options) as setup, httpx.Client() as client:
        state = httpx.URL(read_form(client.get(setup.url + "/").text).action or "").params["state"]
        failed = client.get(f"{setup.url}/callback", params={"code": "expired0", "state": state})
        assert failed.status_code == 502
        assert "GitHub did not create the App" in failed.text
        assert "expires after an hour" in failed.text
        assert 'href="/"' in failed.text
        assert site.conversions == ["expired0"]
        assert written_files(tmp_path) == []
        assert setup.thread.is_alive()

        assert browse(client, setup.url + "/").status_code == 200
        assert setup.finished() is not None
    assert written_files(tmp_path) == [".env", "trimo.private-key.pem"]


def test_a_refused_conversion_shows_githubs_message_and_writes_nothing(
    site: FakeGitHubSite, tmp_path: Path
) -> None:
    site.forced["refused1"] = (
        422,
        {
            "message": "Validation Failed",
            "documentation_url": "https://docs.github.com/rest/apps/apps#create-a-github-app-from-a-manifest",
            "errors": ["Name is already in use"],
        },
    )
    options = SetupOptions(
        webhook_url=WEBHOOK, github_url=site.base_url, env_file=tmp_path / ".env", port=0
    )
    with running_setup(options) as setup, httpx.Client() as client:
        state = httpx.URL(read_form(client.get(setup.url + "/").text).action or "").params["state"]
        failed = client.get(f"{setup.url}/callback", params={"code": "refused1", "state": state})
        assert failed.status_code == 502
        assert "422: Validation Failed" in failed.text
        assert written_files(tmp_path) == []
        assert setup.thread.is_alive()


def test_an_unreachable_github_shows_a_clear_page(tmp_path: Path) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    github_url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    options = SetupOptions(
        webhook_url=WEBHOOK, github_url=github_url, env_file=tmp_path / ".env", port=0
    )
    with running_setup(options) as setup, httpx.Client() as client:
        state = httpx.URL(read_form(client.get(setup.url + "/").text).action or "").params["state"]
        failed = client.get(f"{setup.url}/callback", params={"code": "abc123", "state": state})
        assert failed.status_code == 502
        assert f"cannot reach GitHub at {github_url}/api/v3" in failed.text
    assert written_files(tmp_path) == []


def test_a_code_that_is_not_one_is_never_sent_to_github(
    site: FakeGitHubSite, tmp_path: Path
) -> None:
    options = SetupOptions(
        webhook_url=WEBHOOK, github_url=site.base_url, env_file=tmp_path / ".env", port=0
    )
    with running_setup(options) as setup, httpx.Client() as client:
        state = httpx.URL(read_form(client.get(setup.url + "/").text).action or "").params["state"]
        for code in ("../../../user", "", "a b"):
            failed = client.get(f"{setup.url}/callback", params={"code": code, "state": state})
            assert failed.status_code == 502
    assert site.conversions == []
    assert written_files(tmp_path) == []


def test_settings_that_cannot_be_saved_say_the_app_exists(
    site: FakeGitHubSite, tmp_path: Path
) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    options = SetupOptions(
        webhook_url=WEBHOOK, github_url=site.base_url, env_file=not_a_dir / ".env", port=0
    )
    with running_setup(options) as setup, httpx.Client() as client:
        failed = browse(client, setup.url + "/")
        assert failed.status_code == 500
        assert "GitHub created the App trimo" in failed.text
        assert "Delete trimo" in failed.text
        assert setup.thread.is_alive()
    assert written_files(tmp_path) == ["file"]


def test_another_host_name_is_refused(site: FakeGitHubSite) -> None:
    options = SetupOptions(webhook_url=WEBHOOK, github_url=site.base_url, port=0)
    with running_setup(options) as setup:
        assert httpx.get(setup.url + "/", headers={"Host": "evil.example"}).status_code == 400
        assert httpx.get(setup.url + "/", headers={"Host": "localhost"}).status_code == 200


def test_a_port_in_use_is_a_clear_error(site: FakeGitHubSite) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SetupError, match=f"cannot listen on 127.0.0.1:{port}"):
            SetupServer(SetupOptions(webhook_url=WEBHOOK, github_url=site.base_url, port=port))


# --- the command -----------------------------------------------------------------------------


def test_the_command_is_registered_as_setup() -> None:
    result = CliRunner().invoke(cli, ["setup", "--help"])
    assert result.exit_code == 0
    for option in ("--webhook-url", "--github-url", "--org", "--port", "--env-file"):
        assert option in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--github-url", "github.com"], "not a GitHub address"),
        (["--org", "a/b"], "not an organization name"),
        (["--webhook-url", "trimo.example.com"], "not a webhook URL"),
    ],
)
def test_the_command_explains_bad_input(args: list[str], message: str, tmp_path: Path) -> None:
    argv = ["setup", "--webhook-url", WEBHOOK, "--port", "0", "--no-open", *args]
    argv += ["--env-file", str(tmp_path / ".env")]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 1
    assert message in result.output
    assert written_files(tmp_path) == []


def test_the_command_runs_the_whole_flow_and_prints_no_secret(
    site: FakeGitHubSite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> None:
    pages: list[httpx.Response] = []

    def browser(url: str) -> None:
        def visit() -> None:
            with httpx.Client() as client:
                pages.append(browse(client, url))

        threading.Thread(target=visit, daemon=True).start()

    monkeypatch.setattr("app.ops.setup._open_browser", browser)
    monkeypatch.setenv("TRIMO_APP_SLUG", "set-in-the-shell")
    argv = ["setup", "--webhook-url", "https://trimo.example.com", "--github-url", site.base_url]
    argv += ["--port", "0", "--env-file", str(tmp_path / ".env")]
    result = CliRunner(env={"COLUMNS": "300"}).invoke(cli, argv)

    assert result.exit_code == 0, result.output
    answer = site.answers[0]
    assert [page.status_code for page in pages] == [200]
    assert f"registered Trimo (id {answer['id']}" in result.output
    assert f"{site.base_url}/apps/trimo/installations/new" in result.output
    assert "overriding the file: ['TRIMO_APP_SLUG']" in result.output
    for secret in ("webhook_secret", "client_secret", "pem"):
        assert answer[secret] not in result.output
    assert written_files(tmp_path) == [".env", "trimo.private-key.pem"]


def test_saving_is_private_whatever_the_umask_and_drops_a_stale_webhook_secret(
    tmp_path: Path,
) -> None:
    (tmp_path / ".env").write_text("TRIMO_WEBHOOK_SECRET=set-by-hand\n")
    previous = os.umask(0)
    try:
        app = RegisteredApp(
            id=7,
            slug="trimo-dev",
            name="Trimo dev",
            html_url="https://github.com/apps/trimo-dev",
            owner="octocat",
            pem="-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n",
            webhook_secret=None,
        )
        saved = save_registration(app, tmp_path / ".env", "https://api.github.com")
    finally:
        os.umask(previous)
    assert saved.key_file == tmp_path / "trimo-dev.private-key.pem"
    assert stat.S_IMODE(saved.key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(saved.env_file.stat().st_mode) == 0o600
    assert "TRIMO_WEBHOOK_SECRET" not in saved.env_file.read_text()
    assert "TRIMO_GITHUB_APP_ID=7\n" in saved.env_file.read_text()


def test_a_second_setup_keeps_the_session_secret_so_people_stay_signed_in(
    tmp_path: Path,
) -> None:
    env_file = tmp_path / ".env"
    app = RegisteredApp(
        id=8,
        slug="trimo",
        name="Trimo",
        html_url="https://github.com/apps/trimo",
        owner="octocat",
        pem="-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n",
        webhook_secret="w",
        client_id="Iv1.abc",
        client_secret="shh",
    )
    assert "shh" not in repr(app)
    save_registration(app, env_file, "https://api.github.com")
    first = AppSettings(_env_file=env_file).session_secret  # type: ignore[call-arg]
    env_file.write_text(env_file.read_text() + "TRIMO_PUBLIC_URL=https://kept.example\n")
    save_registration(app, env_file, "https://api.github.com")
    second = AppSettings(_env_file=env_file)  # type: ignore[call-arg]
    assert first is not None and second.session_secret == first
    assert second.public_url == "https://kept.example"
    assert second.github_client_id == "Iv1.abc"
