"""The GitHub stand-in: real git over smart HTTP, and REST answers githubkit accepts."""

from __future__ import annotations

import base64
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import httpx
import jwt
import pytest
from githubkit import AppAuthStrategy, GitHub, TokenAuthStrategy
from githubkit.exception import RequestFailed, SecondaryRateLimitExceeded
from githubkit_schemas.latest import models as m

from tests.fakegithub import AppCredentials, RunningFakeGitHub, generate_key_pair

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
    stranger = client.rest.repos.get_collaborator_permission_level(OWNER, REPO, "mallory")
    assert isinstance(stranger.parsed_data, m.RepositoryCollaboratorPermission)
    assert (stranger.parsed_data.permission, stranger.parsed_data.role_name) == ("read", "read")
    gh.state.set_role(OWNER, REPO, "alice", "maintain")
    alice = client.rest.repos.get_collaborator_permission_level(OWNER, REPO, "alice").parsed_data
    assert (alice.permission, alice.role_name) == ("write", "maintain")
    assert alice.user is not None and alice.user.login == "alice"


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
    pull = created.parsed_data
    assert (pull.head.ref, pull.head.sha, pull.base.ref) == ("trimo/issue-7", sha, "main")
    assert (pull.commits, pull.additions, pull.changed_files) == (1, 2, 1)
    assert pull.user and pull.user.type == "Bot"

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

    found = client.rest.pulls.list(OWNER, REPO, head=f"{OWNER}:trimo/issue-7", state="open")
    assert [p.number for p in found.parsed_data] == [pull.number]
    none = client.rest.pulls.list(OWNER, REPO, head=f"{OWNER}:other", state="open")
    assert none.parsed_data == []
    closed = client.rest.pulls.update(OWNER, REPO, pull.number, state="closed").parsed_data
    assert closed.state == "closed"
    assert client.rest.pulls.get(OWNER, REPO, pull.number).parsed_data.state == "closed"
    issue = client.rest.issues.get(OWNER, REPO, pull.number).parsed_data
    assert issue.pull_request and str(issue.pull_request.url).endswith(f"/pulls/{pull.number}")


def test_review_comment_replies_and_reactions(
    gh: RunningFakeGitHub, client: GitHub[TokenAuthStrategy], tmp_path: Path
) -> None:
    push_branch(gh, tmp_path, "trimo/pr")
    pull = client.rest.pulls.create(OWNER, REPO, title="T", head="trimo/pr", base="main")
    review = gh.state.add_review_comment(
        OWNER, REPO, pull.parsed_data.number, "/trimo fix this", "alice", path="feature.txt"
    )
    reply = client.rest.pulls.create_reply_for_review_comment(
        OWNER, REPO, pull.parsed_data.number, review.id, body="On it"
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
