"""GitHub's documented answers, and drifted copies of them, read through `RepoAPI`.

The seam is the real one: githubkit sends the request and an httpx transport answers with
the example files of GitHub's OpenAPI description, unchanged or mutated (fields removed,
nulled, unknown ones added). githubkit's models reject several of these answers; Trimo's
reading must not.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from githubkit import GitHub

from app.github.client import GitHubApp, PullInfo, RepoAPI, UnexpectedAnswer

OWNER, REPO = "octocat", "Hello-World"
Answer = tuple[int, object]


def example(corpora: Path, name: str) -> Any:
    return json.loads((corpora / "api" / "openapi" / name).read_text())


def api_answering(answer: Callable[[httpx.Request], Answer]) -> tuple[RepoAPI, list[str]]:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        status, body = answer(request)
        return httpx.Response(status, json=body)

    client = GitHub("token", async_transport=httpx.MockTransport(handler), auto_retry=False)
    return RepoAPI(cast(Any, client), cast(Any, None), OWNER, REPO), seen


def drifted(data: dict[str, Any], path: tuple[str, ...], how: str) -> dict[str, Any]:
    """`data` with the field at `path` removed, nulled, or beside an unknown one."""
    out = copy.deepcopy(data)
    node = out
    for key in path[:-1]:
        node = node[key]
    if how == "remove":
        node.pop(path[-1], None)
    elif how == "null":
        node[path[-1]] = None
    else:
        node["trimo_unknown_field"] = {"nested": [1, None]}
    return out


async def test_permission_of_the_documented_answer(corpora: Path) -> None:
    body = example(
        corpora,
        "repos__get-collaborator-permission-level.response.200.response-if-user-has-admin-permissions.json",
    )
    body["user"].pop("role_name", None)  # what the documented answer lacks for githubkit
    api, seen = api_answering(lambda _: (200, body))
    assert await api.role_of("octocat") == "admin"
    assert seen == [f"GET /repos/{OWNER}/{REPO}/collaborators/octocat/permission"]


@pytest.mark.parametrize(
    ("answer", "role"),
    [
        ({"permission": "write", "role_name": "write"}, "write"),
        ({"permission": "write", "role_name": None}, "write"),
        ({"permission": "write"}, "write"),
        ({"permission": "read", "role_name": "custom-auditor"}, "read"),
        ({"role_name": "maintain", "user": None}, "maintain"),
        ({}, None),
    ],
)
async def test_permission_tolerates_missing_and_null(answer: dict[str, Any], role: str) -> None:
    api, _ = api_answering(lambda _: (200, answer))
    assert await api.role_of("alice") == role


async def test_permission_of_an_unknown_user_is_none() -> None:
    api, _ = api_answering(lambda _: (404, {"message": "Not Found"}))
    assert await api.role_of("ghost") is None


async def test_documented_pull_request_with_labels_reads(corpora: Path) -> None:
    body = example(corpora, "pulls__get.response.200.default.json")
    assert body["labels"] and "archived_by" not in body["labels"][0]
    api, _ = api_answering(lambda _: (200, body))
    pull = await api.pull(1347)
    assert pull == PullInfo(
        number=body["number"],
        state=body["state"],
        title=body["title"],
        body=body["body"],
        head_ref=body["head"]["ref"],
        head_sha=body["head"]["sha"],
        head_repo=body["head"]["repo"]["full_name"],
        base_ref=body["base"]["ref"],
        base_repo=body["base"]["repo"]["full_name"],
    )


@pytest.mark.parametrize("how", ["remove", "null", "unknown"])
@pytest.mark.parametrize(
    "path",
    [("title",), ("body",), ("state",), ("labels",), ("head", "repo"), ("base", "repo"),
     ("requested_teams",), ("user",), ("milestone",)],
)  # fmt: skip
async def test_drifted_pull_request_reads(corpora: Path, path: tuple[str, ...], how: str) -> None:
    body = drifted(example(corpora, "pulls__get.response.200.default.json"), path, how)
    api, _ = api_answering(lambda _: (200, body))
    pull = await api.pull(1347)
    assert pull.number == body["number"]
    assert pull.head_sha == body["head"]["sha"]
    if path == ("head", "repo") and how != "unknown":
        assert pull.head_repo is None and pull.is_fork
    if path == ("base", "repo") and how != "unknown":
        assert pull.base_repo == f"{OWNER}/{REPO}"


async def test_pull_request_without_a_head_is_an_unexpected_answer(corpora: Path) -> None:
    body = drifted(example(corpora, "pulls__get.response.200.default.json"), ("head",), "remove")
    api, _ = api_answering(lambda _: (200, body))
    with pytest.raises(UnexpectedAnswer):
        await api.pull(1347)


async def test_opening_a_pull_request_reads_the_documented_201(corpora: Path) -> None:
    body = example(corpora, "pulls__create.response.201.default.json")
    api, seen = api_answering(lambda _: (201, body))
    number = await api.create_pull(head="trimo/issue-1", base="main", title="T", body="B")
    assert number == body["number"]
    assert seen == [f"POST /repos/{OWNER}/{REPO}/pulls"]


async def test_listing_pull_requests_reads_the_documented_answer(corpora: Path) -> None:
    body = example(corpora, "pulls__list.response.200.default.json")
    api, _ = api_answering(lambda _: (200, body))
    found = await api.open_pull_for("new-topic")
    assert found is not None
    assert (found.number, found.title) == (body[0]["number"], body[0]["title"])


@pytest.mark.parametrize(
    ("name", "call"),
    [
        ("issues__create-comment.response.201.default.json", "comment"),
        ("checks__create.response.201.example-of-in-progress-conclusion.json", "check"),
    ],
)
@pytest.mark.parametrize("how", ["unchanged", "nulls"])
async def test_created_ids_read_from_documented_answers(
    corpora: Path, name: str, call: str, how: str
) -> None:
    body = example(corpora, name)
    if how == "nulls":
        body = {key: (value if key == "id" else None) for key, value in body.items()}
    api, _ = api_answering(lambda _: (201, body))
    if call == "comment":
        got = await api.comment(1, "hello")
    else:
        got = await api.create_check_run(
            name="Trimo", head_sha="a" * 40, external_id="r", title="t", summary="s", actions=[]
        )
    assert got == body["id"]


async def test_branch_head_reads_the_documented_ref(corpora: Path) -> None:
    body = example(corpora, "git__get-ref.response.200.default.json")
    body["object"]["type"] = None
    api, _ = api_answering(lambda _: (200, body))
    assert await api.branch_head("featureA") == body["object"]["sha"]


async def test_issue_title_null_reads_empty() -> None:
    api, _ = api_answering(lambda _: (200, {"number": 1, "title": None}))
    assert await api.issue_title(1) == ""


async def test_minted_token_reads_the_documented_201(corpora: Path) -> None:
    body = example(corpora, "apps__create-installation-access-token.response.201.default.json")
    installation = example(corpora, "apps__get-installation.response.200.default.json")
    seen: list[str] = []
    asked: list[object] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        if request.method == "GET":
            return httpx.Response(200, json=installation)
        asked.append(json.loads(request.content)["permissions"])
        return httpx.Response(201, json=body)

    app = object.__new__(GitHubApp)
    app._workflows = {}
    app._app = cast(Any, GitHub("jwt", async_transport=httpx.MockTransport(handler)))
    assert await app.mint_token(42, REPO) == body["token"]
    assert await app.mint_token(42, REPO) == body["token"]
    assert seen == [
        "GET /app/installations/42",
        "POST /app/installations/42/access_tokens",
        "POST /app/installations/42/access_tokens",
    ]  # the installation's permissions are read once, then cached
    granted = installation["permissions"].get("workflows") == "write"
    assert asked[0] == {
        "contents": "write",
        "metadata": "read",
        **({"workflows": "write"} if granted else {}),
    }
