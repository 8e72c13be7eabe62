"""The stand-in's OAuth web flow and user endpoints answer as GitHub documents them."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.fakegithub import RunningFakeGitHub

ORG = "octo-org"
CALLBACK = "http://127.0.0.1:9/oauth/callback"


@pytest.fixture
def gh() -> Iterator[RunningFakeGitHub]:
    with RunningFakeGitHub() as running:
        running.install_app(ORG)
        for index in range(3):
            running.create_repo(ORG, f"repo{index}", {"README.md": "x\n"})
            running.state.set_role(ORG, f"repo{index}", "alice", "maintain")
        yield running


def authorize(gh: RunningFakeGitHub, redirect_uri: str = CALLBACK) -> dict[str, list[str]]:
    app = gh.state.app
    assert app is not None
    answer = httpx.get(
        f"{gh.api_url}/login/oauth/authorize",
        params={"client_id": app.client_id, "redirect_uri": redirect_uri, "state": "s1"},
    )
    assert answer.status_code == 302
    return parse_qs(urlsplit(answer.headers["location"]).query)


def exchange(gh: RunningFakeGitHub, json: bool = False, **fields: str) -> httpx.Response:
    app = gh.state.app
    assert app is not None
    form = {"client_id": app.client_id, "client_secret": gh.state.oauth.client_secret, **fields}
    headers = {"Accept": "application/json"} if json else {}
    return httpx.post(f"{gh.api_url}/login/oauth/access_token", data=form, headers=headers)


def test_a_code_becomes_an_expiring_token_once_form_encoded_by_default(
    gh: RunningFakeGitHub,
) -> None:
    gh.state.sign_in_as("alice")
    query = authorize(gh)
    assert query["state"] == ["s1"]
    first = exchange(gh, code=query["code"][0], redirect_uri=CALLBACK)
    assert first.status_code == 200
    assert first.headers["content-type"].startswith("application/x-www-form-urlencoded")
    token = parse_qs(first.text)
    assert token["access_token"][0].startswith("ghu_") and token["expires_in"] == ["28800"]
    assert token["refresh_token"][0].startswith("ghr_") and token["token_type"] == ["bearer"]
    again = exchange(gh, json=True, code=query["code"][0])
    assert again.status_code == 200 and again.json()["error"] == "bad_verification_code"


def test_a_refresh_token_works_once_and_old_tokens_stop_at_expiry(gh: RunningFakeGitHub) -> None:
    gh.state.sign_in_as("alice")
    token = exchange(gh, json=True, code=authorize(gh)["code"][0]).json()
    gh.state.expire_user_tokens()
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    assert httpx.get(f"{gh.api_url}/user", headers=headers).status_code == 401
    renewed = exchange(
        gh, json=True, grant_type="refresh_token", refresh_token=token["refresh_token"]
    ).json()
    fresh = {"Authorization": f"Bearer {renewed['access_token']}"}
    assert httpx.get(f"{gh.api_url}/user", headers=fresh).json()["login"] == "alice"
    reused = exchange(
        gh, json=True, grant_type="refresh_token", refresh_token=token["refresh_token"]
    ).json()
    assert reused["error"] == "bad_refresh_token"


def test_wrong_credentials_and_a_foreign_redirect_are_refused(gh: RunningFakeGitHub) -> None:
    gh.state.sign_in_as("alice")
    code = authorize(gh)["code"][0]
    wrong = exchange(gh, json=True, code=code, client_secret="nope").json()
    assert wrong["error"] == "incorrect_client_credentials"
    gh.state.oauth.callback_url = CALLBACK
    query = authorize(gh, "https://evil.example/steal")
    assert query["error"] == ["redirect_uri_mismatch"] and "code" not in query


def test_the_user_endpoints_list_the_apps_installations_and_roles_page_by_page(
    gh: RunningFakeGitHub,
) -> None:
    gh.state.sign_in_as("alice")
    token = exchange(gh, json=True, code=authorize(gh)["code"][0]).json()["access_token"]
    headers = {"Authorization": f"token {token}"}
    installations = httpx.get(f"{gh.api_url}/user/installations", headers=headers).json()
    assert installations["total_count"] == 1
    inst = installations["installations"][0]
    assert inst["account"]["login"] == ORG
    url = f"{gh.api_url}/user/installations/{inst['id']}/repositories"
    first = httpx.get(url, headers=headers, params={"per_page": 2})
    assert len(first.json()["repositories"]) == 2 and 'rel="next"' in first.headers["link"]
    second = httpx.get(url, headers=headers, params={"per_page": 2, "page": 2}).json()
    names = [r["full_name"] for r in first.json()["repositories"] + second["repositories"]]
    assert sorted(names) == [f"{ORG}/repo0", f"{ORG}/repo1", f"{ORG}/repo2"]
    permissions = second["repositories"][0]["permissions"]
    assert permissions == {
        "admin": False,
        "maintain": True,
        "push": True,
        "triage": True,
        "pull": True,
    }
    gh.state.revoke_user_tokens("alice")
    assert httpx.get(url, headers=headers).status_code == 401


def test_someone_without_access_reaches_no_installation(gh: RunningFakeGitHub) -> None:
    gh.state.sign_in_as("mallory")
    token = exchange(gh, json=True, code=authorize(gh)["code"][0]).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{gh.api_url}/user/installations", headers=headers).json() == {
        "total_count": 0,
        "installations": [],
    }
    inst = gh.state.installation_for(ORG)
    assert inst is not None
    answer = httpx.get(f"{gh.api_url}/user/installations/{inst.id}/repositories", headers=headers)
    assert answer.status_code == 404
