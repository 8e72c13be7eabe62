"""The GitHub stand-in: real git over smart HTTP, REST answers in GitHub's documented shape
(not githubkit's), and its modes: canned answers, drift, chaos, delay, targeted faults.

Requests go through githubkit where the App uses it; answers are read as JSON, because
the stand-in serves what GitHub documents, which githubkit's models do not always accept.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import jwt
import pytest
from githubkit import AppAuthStrategy, GitHub, Response, TokenAuthStrategy
from githubkit.exception import RequestFailed, SecondaryRateLimitExceeded
from githubkit_schemas.latest import models as m
from pydantic import ValidationError

from tests.fakegithub import AppCredentials, RunningFakeGitHub, generate_key_pair
from tests.fakegithub.modes import Chaos, Drift
from tests.fakegithub.templates import example, host_pairs, recorded, rewrite

OWNER, REPO = "acme", "widgets"
CONFIG = "agent: claude\nnetwork: none\n"


def git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Real git, never prompting, with no user or system configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_TERMINAL_PROMPT="0", GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_NOSYSTEM="1")
    return subprocess.run(
        ["git", "-c", "credential.helper=", "-c", "user.name=T", "-c", "user.email=t@x", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=check,
        timeout=60,
    )


def authed(url: str, token: str) -> str:
    return url.replace("http://", f"http://x-access-token:{token}@")


@pytest.fixture
def gh() -> Iterator[RunningFakeGitHub]:
    with RunningFakeGitHub() as running:
        running.install_app(OWNER)
        running.create_repo(OWNER, REPO, {"README.md": "# widgets\n", ".github/trimo.yml": CONFIG})
        yield running
        assert running.state.violations == []


@pytest.fixture
def creds(gh: RunningFakeGitHub) -> AppCredentials:
    return gh.install_app(OWNER)


@pytest.fixture
def client(gh: RunningFakeGitHub) -> GitHub[TokenAuthStrategy]:
    return GitHub(TokenAuthStrategy(gh.token_for(OWNER)), base_url=gh.api_url, auto_retry=False)


def raw(response: Response[Any]) -> Any:
    """The answer's JSON as GitHub sent it, not as githubkit's model would have it."""
    return json.loads(response.content)


def clone(gh: RunningFakeGitHub, tmp_path: Path, token: str) -> Path:
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", authed(gh.clone_url(OWNER, REPO), token), str(work))
    return work


def push_branch(gh: RunningFakeGitHub, tmp_path: Path, branch: str = "trimo/issue-1") -> str:
    """Push one new commit on `branch`; returns its sha."""
    work = clone(gh, tmp_path, gh.token_for(OWNER))
    git(work, "switch", "-q", "-c", branch)
    (work / "feature.txt").write_text("one\ntwo\n")
    git(work, "add", "feature.txt")
    git(work, "commit", "-q", "-m", "Add feature")
    git(work, "push", "-q", "origin", branch)
    return git(work, "rev-parse", "HEAD").stdout.strip()


# --- git -------------------------------------------------------------------------------------


def test_clone_with_token_then_push_a_branch(gh: RunningFakeGitHub, tmp_path: Path) -> None:
    sha = push_branch(gh, tmp_path)
    work = tmp_path / "work"
    assert (work / ".github" / "trimo.yml").read_text() == CONFIG
    assert gh.fake.branch_sha(OWNER, REPO, "trimo/issue-1") == sha
    assert any(r.query.get("service") == "git-receive-pack" for r in gh.state.git_requests)


def test_clone_without_or_with_a_wrong_token_fails_without_prompting(
    gh: RunningFakeGitHub, tmp_path: Path
) -> None:
    url = gh.clone_url(OWNER, REPO)
    anonymous = git(tmp_path, "clone", "-q", url, str(tmp_path / "a"), check=False)
    assert anonymous.returncode != 0
    assert "could not read Username" in anonymous.stderr
    wrong = git(tmp_path, "clone", "-q", authed(url, "ghs_wrong"), str(tmp_path / "b"), check=False)
    assert wrong.returncode != 0
    assert "Authentication failed" in wrong.stderr
    assert {r.status for r in gh.state.git_requests} == {401}


def test_push_to_default_branch_is_refused(gh: RunningFakeGitHub, tmp_path: Path) -> None:
    before = gh.fake.branch_sha(OWNER, REPO, "main")
    work = clone(gh, tmp_path, gh.token_for(OWNER))
    (work / "README.md").write_text("changed\n")
    git(work, "commit", "-q", "-am", "Change main")
    pushed = git(work, "push", "origin", "main", check=False)
    assert pushed.returncode != 0
    assert "GH006: Protected branch update failed for refs/heads/main" in pushed.stderr
    assert gh.fake.branch_sha(OWNER, REPO, "main") == before


def test_token_scope_and_permissions_hold_for_git(gh: RunningFakeGitHub, tmp_path: Path) -> None:
    gh.create_repo(OWNER, "other", {"x.txt": "x\n"})
    scoped = gh.token_for(OWNER, repositories=["other"])
    denied = git(
        tmp_path, "clone", "-q", authed(gh.clone_url(OWNER, REPO), scoped), "w", check=False
    )
    assert denied.returncode != 0
    assert "not found" in denied.stderr
    api = httpx.get(
        f"{gh.api_url}/repos/{OWNER}/{REPO}", headers={"Authorization": f"token {scoped}"}
    )
    assert api.status_code == 404
    inst = gh.state.installation_for(OWNER)
    assert inst is not None
    read_only = gh.state.issue_token(inst.id, permissions={"contents": "read"}).token
    work = clone(gh, tmp_path, read_only)
    git(work, "switch", "-q", "-c", "topic")
    refused = git(work, "push", "origin", "topic", check=False)
    assert refused.returncode != 0
    assert "403" in refused.stderr
    assert gh.fake.branch_sha(OWNER, REPO, "topic") is None


def test_expired_tokens_are_refused(gh: RunningFakeGitHub, tmp_path: Path) -> None:
    token = gh.token_for(OWNER)
    gh.state.expire_tokens()
    done = git(tmp_path, "clone", "-q", authed(gh.clone_url(OWNER, REPO), token), "w", check=False)
    assert done.returncode != 0
    answer = httpx.get(
        f"{gh.api_url}/repos/{OWNER}/{REPO}", headers={"Authorization": f"token {token}"}
    )
    assert answer.status_code == 401
    assert answer.json()["message"] == "Bad credentials"


# --- app authentication --------------------------------------------------------------------


def test_app_jwt_mints_tokens_that_git_accepts(
    gh: RunningFakeGitHub, creds: AppCredentials, tmp_path: Path
) -> None:
    app = GitHub(AppAuthStrategy(creds.app_id, creds.private_key_pem), base_url=gh.api_url)
    me = app.rest.apps.get_authenticated().parsed_data
    assert isinstance(me, m.Integration)
    assert me.id == creds.app_id
    assert me.slug == "trimo"
    inst = app.rest.apps.get_repo_installation(OWNER, REPO).parsed_data
    assert inst.id == creds.installation_id
    minted = app.rest.apps.create_installation_access_token(
        creds.installation_id, repositories=[REPO], permissions={"contents": "write"}
    )
    assert minted.status_code == 201
    token = minted.parsed_data
    assert token.token.startswith("ghs_")
    assert token.permissions and token.permissions.contents == "write"
    assert token.repositories and [r.full_name for r in token.repositories] == [f"{OWNER}/{REPO}"]
    assert token.repositories[0].clone_url == gh.clone_url(OWNER, REPO)
    assert (clone(gh, tmp_path, token.token) / "README.md").exists()


def test_installation_auth_through_githubkit(gh: RunningFakeGitHub, creds: AppCredentials) -> None:
    app = GitHub(AppAuthStrategy(creds.app_id, creds.private_key_pem), base_url=gh.api_url)
    installed = app.with_auth(app.auth.as_installation(creds.installation_id))
    repo = installed.rest.repos.get(OWNER, REPO).parsed_data
    assert repo.full_name == f"{OWNER}/{REPO}"
    assert repo.default_branch == "main"
    assert gh.state.requests_to("POST", r"/access_tokens$")


def test_bad_credentials_get_401(gh: RunningFakeGitHub, creds: AppCredentials) -> None:
    stranger_key, _ = generate_key_pair()
    forger = GitHub(AppAuthStrategy(creds.app_id, stranger_key), base_url=gh.api_url)
    with pytest.raises(RequestFailed) as raised:
        forger.rest.apps.get_authenticated()
    assert raised.value.response.status_code == 401
    assert raised.value.response.json()["message"] == "A JSON web token could not be decoded"
    nobody = httpx.get(f"{gh.api_url}/repos/{OWNER}/{REPO}/issues/1")
    assert nobody.status_code == 401
    assert nobody.json()["message"] == "Bad credentials"
    token_on_app = httpx.get(f"{gh.api_url}/app", headers={"Authorization": "token ghs_x"})
    assert token_on_app.status_code == 401


def test_jwt_claims_are_checked(gh: RunningFakeGitHub, creds: AppCredentials) -> None:
    now = int(time.time())

    def answer(claims: dict[str, object]) -> httpx.Response:
        token = jwt.encode(claims, creds.private_key_pem, algorithm="RS256")
        return httpx.get(f"{gh.api_url}/app", headers={"Authorization": f"Bearer {token}"})

    good = {"iss": str(creds.app_id), "iat": now - 60, "exp": now + 540}
    assert answer(good).status_code == 200
    assert answer({**good, "exp": now + 3600}).status_code == 401
    assert answer({**good, "exp": now - 120, "iat": now - 600}).status_code == 401
    assert answer({**good, "iss": "999999"}).status_code == 401


def test_tokens_for_foreign_repositories_are_refused(
    gh: RunningFakeGitHub, creds: AppCredentials
) -> None:
    app = GitHub(
        AppAuthStrategy(creds.app_id, creds.private_key_pem), base_url=gh.api_url, auto_retry=False
    )
    with pytest.raises(RequestFailed) as raised:
        app.rest.apps.create_installation_access_token(
            creds.installation_id, repositories=["not-there"]
        )
    assert raised.value.response.status_code == 422
    assert gh.state.tokens == {}


def test_permissions_of_a_token_are_enforced(gh: RunningFakeGitHub) -> None:
    issue = gh.state.add_issue(OWNER, REPO, "Bug", "Fix it", user="alice")
    inst = gh.state.installation_for(OWNER)
    assert inst is not None
    token = gh.state.issue_token(inst.id, permissions={"issues": "read", "metadata": "read"})
    reader = GitHub(TokenAuthStrategy(token.token), base_url=gh.api_url, auto_retry=False)
    assert reader.rest.issues.get(OWNER, REPO, issue.number).parsed_data.title == "Bug"
    with pytest.raises(RequestFailed) as raised:
        reader.rest.issues.create_comment(OWNER, REPO, issue.number, body="hi")
    assert raised.value.response.status_code == 403
    assert raised.value.response.json()["message"] == "Resource not accessible by integration"


# --- REST endpoints through githubkit ----------------------------------------------------------


def test_collaborator_permission_defaults_to_read_and_is_configurable(
    gh: RunningFakeGitHub, client: GitHub[TokenAuthStrategy]
) -> None:
    stranger = raw(client.rest.repos.get_collaborator_permission_level(OWNER, REPO, "mallory"))
    assert (stranger["permission"], stranger["role_name"]) == ("read", "read")
    gh.state.set_role(OWNER, REPO, "alice", "maintain")
    alice = raw(client.rest.repos.get_collaborator_permission_level(OWNER, REPO, "alice"))
    assert (alice["permission"], alice["role_name"]) == ("write", "maintain")
    assert alice["user"]["login"] == "alice"
    # GitHub's documented answer has no user.role_name (githubkit's model requires one)
    assert "role_name" not in alice["user"]


def test_contents_come_from_the_git_repository(
    gh: RunningFakeGitHub, client: GitHub[TokenAuthStrategy], tmp_path: Path
) -> None:
    found = client.rest.repos.get_content(OWNER, REPO, ".github/trimo.yml").parsed_data
    assert isinstance(found, m.ContentFile)
    assert base64.b64decode(found.content).decode() == CONFIG
    work = clone(gh, tmp_path, gh.token_for(OWNER))
    git(work, "switch", "-q", "-c", "tweak")
    (work / ".github" / "trimo.yml").write_text("agent: codex\n")
    git(work, "commit", "-q", "-am", "codex")
    git(work, "push", "-q", "origin", "tweak")
    on_branch = client.rest.repos.get_content(OWNER, REPO, ".github/trimo.yml", ref="tweak")
    assert isinstance(on_branch.parsed_data, m.ContentFile)
    assert base64.b64decode(on_branch.parsed_data.content) == b"agent: codex\n"
    assert on_branch.parsed_data.sha != found.sha
    with pytest.raises(RequestFailed) as raised:
        client.rest.repos.get_content(OWNER, REPO, ".github/missing.yml")
    assert raised.value.response.status_code == 404


def test_issue_comments_and_reactions(
    gh: RunningFakeGitHub, client: GitHub[TokenAuthStrategy]
) -> None:
    issue = gh.state.add_issue(OWNER, REPO, "Add a widget", "Please", user="alice")
    human = gh.state.add_comment(OWNER, REPO, issue.number, "/trimo run", "alice")
    answer = client.rest.issues.get(OWNER, REPO, issue.number)
    got = answer.parsed_data
    assert (got.number, got.title) == (issue.number, "Add a widget")
    assert got.user is not None and got.user.login == "alice"
    assert "pull_request" not in answer.json()

    created = client.rest.issues.create_comment(OWNER, REPO, issue.number, body="Working on it")
    assert created.status_code == 201
    comment = created.parsed_data
    assert comment.user is not None and comment.user.type == "Bot"
    assert comment.user.login == "trimo[bot]"
    assert comment.performed_via_github_app and comment.performed_via_github_app.slug == "trimo"

    edited = client.rest.issues.update_comment(OWNER, REPO, comment.id, body="Done").parsed_data
    assert edited.body == "Done"
    assert [c.body for c in gh.state.comments_on(issue.number)] == ["/trimo run", "Done"]

    first = client.rest.reactions.create_for_issue_comment(OWNER, REPO, human.id, content="eyes")
    again = client.rest.reactions.create_for_issue_comment(OWNER, REPO, human.id, content="eyes")
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.parsed_data.id == again.parsed_data.id
    assert first.parsed_data.content == "eyes"
    on_issue = client.rest.reactions.create_for_issue(OWNER, REPO, issue.number, content="rocket")
    assert on_issue.parsed_data.content == "rocket"

    # githubkit's `issues` client has a method called `list`, which confuses mypy here
    listed = cast(
        "list[m.IssueComment]",
        client.rest.issues.list_comments(OWNER, REPO, issue.number).parsed_data,
    )
    assert [c.id for c in listed] == [human.id, comment.id]
    assert listed[0].reactions and listed[0].reactions.eyes == 1


def test_comment_list_is_paginated_with_link_headers(
    gh: RunningFakeGitHub, client: GitHub[TokenAuthStrategy]
) -> None:
    issue = gh.state.add_issue(OWNER, REPO, "Many", "", user="alice")
    for i in range(5):
        gh.state.add_comment(OWNER, REPO, issue.number, f"c{i}", "alice")
    first = client.rest.issues.list_comments(OWNER, REPO, issue.number, per_page=2)
    assert 'rel="next"' in first.headers["link"]
    every: list[m.IssueComment] = list(
        client.rest.paginate(
            client.rest.issues.list_comments,
            owner=OWNER,
            repo=REPO,
            issue_number=issue.number,
            per_page=2,
        )
    )
    assert [c.body for c in every] == [f"c{i}" for i in range(5)]


def test_check_runs(gh: RunningFakeGitHub, client: GitHub[TokenAuthStrategy]) -> None:
    sha = gh.fake.branch_sha(OWNER, REPO, "main")
    assert sha is not None
    created = client.rest.checks.create(
        OWNER,
        REPO,
        name="trimo",
        head_sha=sha,
        status="in_progress",
        external_id="run-1",
        output={"title": "Running", "summary": "Started"},
    )
    assert created.status_code == 201
    run = created.parsed_data
    assert (run.status, run.conclusion, run.head_sha) == ("in_progress", None, sha)
    assert run.app and run.app.slug == "trimo"
    updated = client.rest.checks.update(
        OWNER,
        REPO,
        run.id,
        conclusion="success",
        output={"title": "Done", "summary": "All good", "text": "log"},
    ).parsed_data
    assert (updated.status, updated.conclusion) == ("completed", "success")
    assert updated.completed_at is not None
    fetched = client.rest.checks.get(OWNER, REPO, run.id).parsed_data
    assert fetched.output.title == "Done"
    [stored] = gh.state.check_runs_for(sha)
    assert (stored.id, stored.external_id, stored.output["text"]) == (run.id, "run-1", "log")
    with pytest.raises(RequestFailed) as raised:
        client.rest.checks.create(OWNER, REPO, name="trimo", head_sha="0" * 40)
    assert raised.value.response.status_code == 422


def test_pull_requests(
    gh: RunningFakeGitHub, client: GitHub[TokenAuthStrategy], tmp_path: Path
) -> None:
    sha = push_branch(gh, tmp_path, "trimo/issue-7")
    created = client.rest.pulls.create(
        OWNER, REPO, title="Widget", head="trimo/issue-7", base="main", body="Closes #7"
    )
    assert created.status_code == 201
    pull = created.json()
    assert (pull["head"]["ref"], pull["head"]["sha"], pull["base"]["ref"]) == (
        "trimo/issue-7",
        sha,
        "main",
    )
    assert (pull["commits"], pull["additions"], pull["changed_files"]) == (1, 2, 1)
    assert pull["user"]["type"] == "Bot"
    documented = example("pulls__create.response.201.default")
    hosted = rewrite(documented, host_pairs(gh.api_url))
    assert pull["labels"] == hosted["labels"]  # as GitHub documents them: no archived_by
    assert pull["requested_teams"] == hosted["requested_teams"]

    with pytest.raises(RequestFailed) as raised:
        client.rest.pulls.create(OWNER, REPO, title="Again", head="trimo/issue-7", base="main")
    error = raised.value.response.json()
    assert raised.value.response.status_code == 422
    assert error["message"] == "Validation Failed"
    assert "A pull request already exists" in error["errors"][0]["message"]
    with pytest.raises(RequestFailed) as raised:
        client.rest.pulls.create(OWNER, REPO, title="Same", head="main", base="main")
    assert (
        "No commits between main and main" in raised.value.response.json()["errors"][0]["message"]
    )

    number = pull["number"]
    found = client.rest.pulls.list(OWNER, REPO, head=f"{OWNER}:trimo/issue-7", state="open")
    assert [p["number"] for p in found.json()] == [number]
    none = client.rest.pulls.list(OWNER, REPO, head=f"{OWNER}:other", state="open")
    assert none.json() == []
    closed = client.rest.pulls.update(OWNER, REPO, number, state="closed").json()
    assert closed["state"] == "closed"
    assert client.rest.pulls.get(OWNER, REPO, number).json()["state"] == "closed"
    issue = raw(client.rest.issues.get(OWNER, REPO, number))
    assert issue["pull_request"]["url"].endswith(f"/pulls/{number}")


def test_review_comment_replies_and_reactions(
    gh: RunningFakeGitHub, client: GitHub[TokenAuthStrategy], tmp_path: Path
) -> None:
    push_branch(gh, tmp_path, "trimo/pr")
    number = client.rest.pulls.create(OWNER, REPO, title="T", head="trimo/pr", base="main").json()[
        "number"
    ]
    review = gh.state.add_review_comment(
        OWNER, REPO, number, "/trimo fix this", "alice", path="feature.txt"
    )
    reply = client.rest.pulls.create_reply_for_review_comment(
        OWNER, REPO, number, review.id, body="On it"
    )
    assert reply.status_code == 201
    assert (reply.parsed_data.in_reply_to_id, reply.parsed_data.path) == (review.id, "feature.txt")
    reaction = client.rest.reactions.create_for_pull_request_review_comment(
        OWNER, REPO, review.id, content="+1"
    )
    assert reaction.status_code == 201
    assert [r.content for r in review.reactions] == ["+1"]


def test_rate_limit(client: GitHub[TokenAuthStrategy]) -> None:
    limits = client.rest.rate_limit.get().parsed_data
    assert limits.resources.core.limit == 5000


# --- protocol violations and faults ----------------------------------------------------------


def test_malformed_bodies_are_refused_and_recorded(gh: RunningFakeGitHub) -> None:
    sha = gh.fake.branch_sha(OWNER, REPO, "main")
    headers = {"Authorization": f"token {gh.token_for(OWNER)}"}
    url = f"{gh.api_url}/repos/{OWNER}/{REPO}/check-runs"
    bogus = httpx.post(url, headers=headers, json={"name": "t", "head_sha": sha, "status": "bogus"})
    assert bogus.status_code == 422
    assert bogus.json()["message"].startswith("Invalid request.")
    typo = httpx.post(
        url, headers=headers, json={"name": "t", "head_sha": sha, "conclsion": "success"}
    )
    assert typo.status_code == 422
    long = httpx.post(
        f"{gh.api_url}/repos/{OWNER}/{REPO}/issues/1/comments",
        headers=headers,
        json={"body": 7},
    )
    assert long.status_code == 422
    assert [v.path for v in gh.state.violations] == [
        f"/repos/{OWNER}/{REPO}/check-runs",
        f"/repos/{OWNER}/{REPO}/check-runs",
        f"/repos/{OWNER}/{REPO}/issues/1/comments",
    ]
    assert "conclsion: not a field" in gh.state.violations[1].detail
    assert gh.state.check_runs == {}
    gh.state.violations.clear()


def test_unknown_endpoints_are_violations(gh: RunningFakeGitHub) -> None:
    headers = {"Authorization": f"token {gh.token_for(OWNER)}"}
    answer = httpx.get(f"{gh.api_url}/repos/{OWNER}/{REPO}/deployments", headers=headers)
    assert answer.status_code == 404
    [violation] = gh.state.violations
    assert violation.detail == "no such endpoint in the GitHub stand-in"
    gh.state.violations.clear()


def test_injected_faults(gh: RunningFakeGitHub, client: GitHub[TokenAuthStrategy]) -> None:
    gh.state.fail_next("GET", r"/repos/acme/widgets$", 403, {"Retry-After": "7"})
    with pytest.raises(SecondaryRateLimitExceeded) as secondary:
        client.rest.repos.get(OWNER, REPO)
    assert secondary.value.retry_after.total_seconds() == 7
    gh.state.fail_next("GET", r"/repos/acme/widgets$", 500)
    with pytest.raises(RequestFailed) as failed:
        client.rest.repos.get(OWNER, REPO)
    assert failed.value.response.status_code == 500
    assert client.rest.repos.get(OWNER, REPO).status_code == 200

    retrying = GitHub(TokenAuthStrategy(gh.token_for(OWNER)), base_url=gh.api_url)
    gh.state.fail_next("GET", r"/rate_limit$", 502)
    assert retrying.rest.rate_limit.get().status_code == 200
    assert [r.status for r in gh.state.requests_to("GET", r"/rate_limit$")] == [502, 200]


# --- answers as GitHub gives them --------------------------------------------------------------


def api(gh: RunningFakeGitHub) -> httpx.Client:
    """A plain HTTP client with an installation token: answers read as they come."""
    return httpx.Client(
        base_url=gh.api_url, headers={"Authorization": f"token {gh.token_for(OWNER)}"}, timeout=30
    )


PERMISSION = (
    "repos__get-collaborator-permission-level.response.200.response-if-user-has-admin-permissions"
)


def test_documented_examples_are_served_exactly_even_when_githubkit_rejects_them(
    gh: RunningFakeGitHub, client: GitHub[TokenAuthStrategy]
) -> None:
    gh.state.serve_example("GET", r"/collaborators/\w+/permission$", PERMISSION)
    answer = client.rest.repos.get_collaborator_permission_level(OWNER, REPO, "octocat")
    assert answer.status_code == 200
    assert answer.json() == example(PERMISSION)
    assert answer.content == answer.content  # (bytes arrive as sent)
    with pytest.raises(ValidationError):  # the documented answer lacks user.role_name
        answer.parsed_data  # noqa: B018
    gh.state.serve_example("POST", r"/pulls$", "pulls__create.response.201.default", times=1)
    created = api(gh).post(
        f"/repos/{OWNER}/{REPO}/pulls", json={"title": "T", "head": "x", "base": "main"}
    )
    assert (created.status_code, created.json()) == (
        201,
        example("pulls__create.response.201.default"),
    )
    assert gh.state.canned == [gh.state.canned[0]]  # the one-shot answer is used up


def test_recorded_answers_are_served_as_recorded(gh: RunningFakeGitHub) -> None:
    gh.state.serve_recorded("GET", rf"/repos/{OWNER}/{REPO}$", "rename-repository", index=1)
    moved = api(gh).get(f"/repos/{OWNER}/{REPO}")
    data, status = recorded("rename-repository", 1)
    assert (moved.status_code, moved.json()) == (status, data) == (301, data)
    assert data["message"] == "Moved Permanently"


def test_rendered_answers_keep_every_documented_field(gh: RunningFakeGitHub) -> None:
    issue = gh.state.add_issue(OWNER, REPO, "Bug", "Fix it", user="alice")
    got = api(gh).get(f"/repos/{OWNER}/{REPO}/issues/{issue.number}").json()
    documented = rewrite(example("issues__create.response.201.default"), host_pairs(gh.api_url))
    assert set(documented) - {"pull_request"} <= set(got)  # an issue is no pull request
    assert (got["title"], got["number"], got["user"]["login"]) == ("Bug", issue.number, "alice")
    for untouched in ("labels", "assignee", "milestone", "closed_by", "pinned_comment"):
        assert got[untouched] == documented[untouched], untouched


# --- drift -----------------------------------------------------------------------------------


def paths(data: object, prefix: str = "") -> dict[str, object]:
    """Every dotted path of `data` and its value (`[]` for list items, first item only)."""
    found: dict[str, object] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            here = f"{prefix}.{key}" if prefix else key
            found[here] = value
            found.update(paths(value, here))
    elif isinstance(data, list) and data:
        found.update(paths(data[0], f"{prefix}[]"))
    return found


def test_drift_removes_nulls_and_adds_fields_but_spares_what_trimo_reads(
    gh: RunningFakeGitHub, tmp_path: Path
) -> None:
    push_branch(gh, tmp_path, "trimo/drift")
    http = api(gh)
    number = http.post(
        f"/repos/{OWNER}/{REPO}/pulls", json={"title": "T", "head": "trimo/drift", "base": "main"}
    ).json()["number"]
    plain = paths(http.get(f"/repos/{OWNER}/{REPO}/pulls/{number}").json())

    gh.state.drift = Drift(seed=7, remove=0.25, null=0.25, add=0.5)
    drifted = paths(http.get(f"/repos/{OWNER}/{REPO}/pulls/{number}").json())
    removed = [p for p in plain if p not in drifted and p.rsplit(".", 1)[0] in drifted]
    nulled = [p for p in plain if drifted.get(p, 0) is None and plain[p] is not None]
    added = [p for p in drifted if p not in plain]
    assert len(removed) > 10 and len(nulled) > 10 and len(added) > 3, (removed, nulled, added)
    for needed in ("number", "head.ref", "head.sha", "head.repo.full_name", "base.ref"):
        assert drifted[needed] == plain[needed], needed
    kinds = {kind for _, kind in gh.state.drift.changes}
    assert kinds == {"removed", "nulled", "added"}

    gh.state.drift = Drift(seed=7, remove=0.25, null=0.25, add=0.5)
    again = paths(http.get(f"/repos/{OWNER}/{REPO}/pulls/{number}").json())
    assert {p: v for p, v in again.items() if p != "updated_at"} == {
        p: v for p, v in drifted.items() if p != "updated_at"
    }  # the same seed drifts the same way


# --- chaos and delay ---------------------------------------------------------------------------


def statuses(gh: RunningFakeGitHub, count: int) -> list[int]:
    with httpx.Client(base_url=gh.api_url, timeout=30) as http:
        return [http.get("/rate_limit").status_code for _ in range(count)]


def test_chaos_honours_its_rates_and_replays_with_its_seed(gh: RunningFakeGitHub) -> None:
    rates = {"404": 0.1, "403": 0.1, "422": 0.05, "5xx": 0.2}
    gh.state.chaos = Chaos(seed=3, rates=rates)
    first = statuses(gh, 600)
    share = {
        kind: sum(1 for s in first if (s >= 500 if kind == "5xx" else s == int(kind))) / 600
        for kind in rates
    }
    for kind, rate in rates.items():
        assert abs(share[kind] - rate) < 0.05, (kind, share)
    assert abs(first.count(200) / 600 - 0.55) < 0.06
    assert {s for s in first if s >= 500} <= {500, 502, 503, 504}
    assert len(gh.state.chaos_log) == sum(1 for s in first if s != 200)

    gh.state.chaos = Chaos(seed=3, rates=rates)
    assert statuses(gh, 600) == first  # one seed, one sequence


def test_chaos_speaks_githubs_words_and_can_aim_at_one_endpoint(gh: RunningFakeGitHub) -> None:
    gh.state.chaos = Chaos(seed=1, rates={"403": 1.0}, endpoints={"get_rate_limit": {}})
    assert statuses(gh, 5) == [200] * 5  # exempted
    denied = api(gh).get(f"/repos/{OWNER}/{REPO}")
    assert denied.status_code == 403
    assert denied.json()["message"] == "Resource not accessible by integration"
    gh.state.chaos = Chaos(seed=1, endpoints={"get_rate_limit": {"422": 1.0}})
    assert statuses(gh, 2) == [422, 422]
    assert api(gh).get(f"/repos/{OWNER}/{REPO}").status_code == 200
    with pytest.raises(ValueError, match="unknown chaos kinds"):
        Chaos(rates={"418": 0.1})


def test_slow_answers_and_the_per_request_delay_really_wait(gh: RunningFakeGitHub) -> None:
    with httpx.Client(base_url=gh.api_url, timeout=30) as http:

        def timed() -> float:
            start = time.monotonic()
            assert http.get("/rate_limit").status_code == 200
            return time.monotonic() - start

        baseline = min(timed() for _ in range(3))  # the quickest: a busy machine adds to some
        gh.state.delay = 0.5
        delayed = [timed() for _ in range(2)]
    assert min(delayed) >= 0.5 and min(delayed) - baseline >= 0.45, (delayed, baseline)

    gh.state.delay = 0
    gh.state.chaos = Chaos(seed=1, rates={"slow": 1.0}, slow_seconds=0.6)
    start = time.monotonic()
    assert statuses(gh, 1) == [200]  # slow, then the real answer
    assert time.monotonic() - start >= 0.6


# --- targeted faults ---------------------------------------------------------------------------


def test_a_deleted_issue_and_its_comments_answer_404(gh: RunningFakeGitHub) -> None:
    issue = gh.state.add_issue(OWNER, REPO, "Doomed", user="alice")
    comment = gh.state.add_comment(OWNER, REPO, issue.number, "/trimo run", "alice")
    http = api(gh)
    repo = f"/repos/{OWNER}/{REPO}"
    assert http.get(f"{repo}/issues/{issue.number}").status_code == 200
    gh.state.delete_issue(OWNER, REPO, issue.number)
    assert http.get(f"{repo}/issues/{issue.number}").status_code == 404
    assert http.get(f"{repo}/issues/{issue.number}/comments").status_code == 404
    assert (
        http.post(f"{repo}/issues/{issue.number}/comments", json={"body": "x"}).status_code == 404
    )
    assert http.patch(f"{repo}/issues/comments/{comment.id}", json={"body": "x"}).status_code == 404
    reacted = http.post(f"{repo}/issues/comments/{comment.id}/reactions", json={"content": "eyes"})
    assert reacted.status_code == 404


def test_a_transferred_issue_redirects(gh: RunningFakeGitHub) -> None:
    issue = gh.state.add_issue(OWNER, REPO, "Moving", user="alice")
    comment = gh.state.add_comment(OWNER, REPO, issue.number, "hi", "alice")
    gh.state.transfer_issue(OWNER, REPO, issue.number, ("elsewhere", "things", 9))
    http = api(gh)
    moved = http.get(f"/repos/{OWNER}/{REPO}/issues/{issue.number}")
    assert moved.status_code == 301
    assert moved.headers["location"] == f"{gh.api_url}/repos/elsewhere/things/issues/9"
    assert moved.json()["message"] == "Moved Permanently"
    edit = http.patch(f"/repos/{OWNER}/{REPO}/issues/comments/{comment.id}", json={"body": "x"})
    assert edit.status_code == 307
    followed = http.get(f"/repos/{OWNER}/{REPO}/issues/{issue.number}", follow_redirects=True)
    assert followed.status_code == 404  # the token does not reach the new repository


def test_deleted_comments_and_check_runs_answer_404(gh: RunningFakeGitHub) -> None:
    http = api(gh)
    repo = f"/repos/{OWNER}/{REPO}"
    issue = gh.state.add_issue(OWNER, REPO, "Bug", user="alice")
    posted = http.post(f"{repo}/issues/{issue.number}/comments", json={"body": "Working"}).json()
    sha = gh.fake.branch_sha(OWNER, REPO, "main")
    run = http.post(f"{repo}/check-runs", json={"name": "trimo", "head_sha": sha}).json()
    gh.state.delete_comment(posted["id"])
    gh.state.delete_check_run(run["id"])
    assert http.patch(f"{repo}/issues/comments/{posted['id']}", json={"body": "x"}).status_code == (
        404
    )
    gone = http.patch(f"{repo}/check-runs/{run['id']}", json={"status": "in_progress"})
    assert gone.status_code == 404


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("exists", {"code": "custom", "message": "A pull request already exists for acme:topic."}),
        ("no_diff", {"code": "custom", "message": "No commits between main and topic"}),
        ("base_deleted", {"code": "invalid", "field": "base"}),
    ],
)
def test_opening_a_pull_request_can_get_githubs_422s(
    gh: RunningFakeGitHub, tmp_path: Path, reason: str, expected: dict[str, str]
) -> None:
    push_branch(gh, tmp_path, "topic")
    gh.state.refuse_pull(reason)  # type: ignore[arg-type]
    http = api(gh)
    body = {"title": "T", "head": "topic", "base": "main"}
    refused = http.post(f"/repos/{OWNER}/{REPO}/pulls", json=body)
    assert refused.status_code == 422
    assert refused.json()["message"] == "Validation Failed"
    assert refused.json()["errors"] == [{"resource": "PullRequest", **expected}]
    by_people = [p.user for p in gh.state.pulls_for("topic")]
    assert by_people == (["octocat"] if reason == "exists" else [])
    if reason != "exists":
        assert http.post(f"/repos/{OWNER}/{REPO}/pulls", json=body).status_code == 201  # once


def test_disabled_issues_answer_410_but_pull_requests_still_talk(
    gh: RunningFakeGitHub, tmp_path: Path
) -> None:
    issue = gh.state.add_issue(OWNER, REPO, "Bug", user="alice")
    push_branch(gh, tmp_path, "topic")
    http = api(gh)
    number = http.post(
        f"/repos/{OWNER}/{REPO}/pulls", json={"title": "T", "head": "topic", "base": "main"}
    ).json()["number"]
    gh.state.disable_issues(OWNER, REPO)
    gone = http.post(f"/repos/{OWNER}/{REPO}/issues/{issue.number}/comments", json={"body": "x"})
    assert gone.status_code == 410
    assert gone.json()["message"] == "Issues are disabled for this repo"
    on_pull = http.post(f"/repos/{OWNER}/{REPO}/issues/{number}/comments", json={"body": "x"})
    assert on_pull.status_code == 201


def test_removed_suspended_and_reduced_installations(
    gh: RunningFakeGitHub, creds: AppCredentials, tmp_path: Path
) -> None:
    app = GitHub(
        AppAuthStrategy(creds.app_id, creds.private_key_pem), base_url=gh.api_url, auto_retry=False
    )
    http = api(gh)
    repo = f"/repos/{OWNER}/{REPO}"
    issue = gh.state.add_issue(OWNER, REPO, "Bug", user="alice")
    gh.state.revoke_permission(OWNER, "issues")
    gh.state.revoke_permission(OWNER, "pull_requests")
    denied = http.post(f"{repo}/issues/{issue.number}/comments", json={"body": "x"})
    assert denied.status_code == 403
    assert denied.json()["message"] == "Resource not accessible by integration"

    gh.state.suspend_installation(OWNER)
    assert http.get(repo).json()["message"] == "This installation has been suspended"
    with pytest.raises(RequestFailed) as suspended:
        app.rest.apps.create_installation_access_token(creds.installation_id)
    assert suspended.value.response.status_code == 403

    token = gh.token_for(OWNER)
    gh.state.remove_installation(OWNER)
    assert http.get(repo).status_code == 401
    with pytest.raises(RequestFailed) as removed:
        app.rest.apps.create_installation_access_token(creds.installation_id)
    assert removed.value.response.status_code == 404
    cloned = git(
        tmp_path, "clone", "-q", authed(gh.clone_url(OWNER, REPO), token), "w", check=False
    )
    assert cloned.returncode != 0


# --- pushes GitHub refuses ---------------------------------------------------------------------


def commit_files(work: Path, files: dict[str, str | bytes], message: str) -> str:
    for rel, content in files.items():
        target = work / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", message)
    return git(work, "rev-parse", "HEAD").stdout.strip()


def test_a_workflow_file_needs_the_workflows_permission_and_the_rest_still_pushes(
    gh: RunningFakeGitHub, tmp_path: Path
) -> None:
    work = clone(gh, tmp_path, gh.token_for(OWNER))
    git(work, "switch", "-q", "-c", "trimo/1-ci")
    harmless = commit_files(work, {"notes.txt": "hi\n"}, "Harmless")
    commit_files(work, {".github/workflows/ci.yml": "on: push\n"}, "Add CI")
    refused = git(work, "push", "origin", "trimo/1-ci", check=False)
    assert refused.returncode != 0
    assert (
        "! [remote rejected] trimo/1-ci -> trimo/1-ci (refusing to allow a GitHub App to create"
        " or update workflow `.github/workflows/ci.yml` without `workflows` permission)"
    ) in refused.stderr
    assert gh.fake.branch_sha(OWNER, REPO, "trimo/1-ci") is None
    git(work, "push", "-q", "origin", f"{harmless}:refs/heads/trimo/1-ci")  # what GitHub accepts
    assert gh.fake.branch_sha(OWNER, REPO, "trimo/1-ci") == harmless

    inst = gh.state.installation_for(OWNER)
    assert inst is not None
    allowed = gh.state.issue_token(
        inst.id, permissions={"contents": "write", "workflows": "write"}
    ).token
    url = authed(gh.clone_url(OWNER, REPO), allowed)
    git(work, "push", "-q", url, "trimo/1-ci")
    assert (
        gh.fake.branch_sha(OWNER, REPO, "trimo/1-ci")
        == git(work, "rev-parse", "HEAD").stdout.strip()
    )


def test_large_files_secrets_and_unsigned_commits_are_refused_in_githubs_words(
    gh: RunningFakeGitHub, tmp_path: Path
) -> None:
    repo = gh.state.repo(OWNER, REPO)
    assert repo is not None
    repo.max_file_bytes = 1024 * 1024
    work = clone(gh, tmp_path, gh.token_for(OWNER))
    git(work, "switch", "-q", "-c", "big")
    commit_files(work, {"blob.bin": b"\0" * (1024 * 1024 + 10)}, "Big")
    big = git(work, "push", "origin", "big", check=False)
    assert (
        "remote: error: File blob.bin is 1.00 MB; this exceeds GitHub's file size limit of 1.00 MB"
        in big.stderr
    )
    assert "remote: error: GH001: Large files detected." in big.stderr
    assert "! [remote rejected] big -> big (pre-receive hook declined)" in big.stderr

    git(work, "switch", "-q", "-c", "leak", "main")
    secret = "ghp_" + "A1b2C3d4E5" * 3 + "f6G7h8"
    leak = commit_files(work, {"config/env.txt": f"name=x\ntoken={secret}\n"}, "Leak")
    refused = git(work, "push", "origin", "leak", check=False)
    assert "remote: error: GH013: Repository rule violations found for refs/heads/leak." in (
        refused.stderr
    )
    assert "Push cannot contain secrets" in refused.stderr
    assert "GitHub Personal Access Token" in refused.stderr
    assert f"- commit: {leak}" in refused.stderr and "path: config/env.txt:2" in refused.stderr
    assert "! [remote rejected] leak -> leak (push declined due to repository rule violations)" in (
        refused.stderr
    )

    repo.signed_commits = True
    git(work, "switch", "-q", "-c", "plain", "main")
    unsigned = commit_files(work, {"ok.txt": "ok\n"}, "Unsigned")
    rules = git(work, "push", "origin", "plain", check=False)
    assert "- Commits must have verified signatures." in rules.stderr
    assert unsigned in rules.stderr
    assert "(push declined due to repository rule violations)" in rules.stderr
    assert {gh.fake.branch_sha(OWNER, REPO, b) for b in ("big", "leak", "plain")} == {None}


def test_compare_lists_a_branchs_files_with_patches_renames_and_binaries(
    gh: RunningFakeGitHub, tmp_path: Path, client: GitHub[TokenAuthStrategy]
) -> None:
    work = clone(gh, tmp_path, gh.token_for(OWNER))
    git(work, "switch", "-q", "-c", "trimo/3-compare")
    (work / "README.md").write_text("# widgets\nmore\n")
    (work / "blob.bin").write_bytes(b"\0\1\2")
    git(work, "mv", ".github/trimo.yml", "trimo.yml")
    git(work, "add", "-A")
    git(work, "commit", "-qm", "Change things")
    git(work, "push", "-q", "origin", "trimo/3-compare")

    answer = raw(client.request("GET", f"/repos/{OWNER}/{REPO}/compare/main...trimo/3-compare"))
    assert (answer["status"], answer["ahead_by"], answer["behind_by"]) == ("ahead", 1, 0)
    files = {f["filename"]: f for f in answer["files"]}
    assert files["README.md"]["status"] == "modified"
    assert files["README.md"]["patch"].startswith("@@") and "+more" in files["README.md"]["patch"]
    assert (files["README.md"]["additions"], files["README.md"]["deletions"]) == (1, 0)
    assert files["blob.bin"]["status"] == "added" and "patch" not in files["blob.bin"]
    assert files["trimo.yml"]["status"] == "renamed"
    assert files["trimo.yml"]["previous_filename"] == ".github/trimo.yml"
    missing = httpx.get(
        f"{gh.api_url}/repos/{OWNER}/{REPO}/compare/main...nope",
        headers={"Authorization": f"token {gh.token_for(OWNER)}"},
    )
    assert missing.status_code == 404 and missing.json()["message"] == "Not Found"
