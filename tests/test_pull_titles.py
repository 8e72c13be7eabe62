"""A card (and the pipeline page) shows its pull request's title once there is one: kept when
the reporter opens or finds the pull request, and when a person renames it (a signed
`pull_request.edited` delivery through the webhook edge, handled as the App worker does).

Redis is real, GitHub is the stand-in, the dashboard and edge are the App over HTTP.
"""

from __future__ import annotations

import asyncio
import copy
import html
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from app.conversation.naming import pipeline_id
from app.dashboard.board import TITLE_ON_CARD
from app.ops.worker import SERVICES_KEY, handle_event
from app.reporting.channels.pullrequest import PULL_TITLE_CHARS, pull_title_of
from app.runs.pipelines import CHANGES, Pipeline
from tests import test_reporter
from tests.dashboard_helpers import dashboard_settings, make_run, seed, sign_in
from tests.fakegithub.gitserver import run_git
from tests.test_reporter import FULL, OWNER, REPO, World, finished
from tests.webhook_helpers import RunningApp, running_app

fake = test_reporter.fake
world = test_reporter.world

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>\n\r\nX-Evil: 1\n' + "A" * 10_000


@pytest.fixture
def app(redis_url: str) -> Iterator[RunningApp]:
    with running_app(dashboard_settings(redis_url)) as running:
        yield running


@pytest.fixture
async def viewer(app: RunningApp) -> AsyncIterator[httpx.AsyncClient]:
    """A client signed in to the dashboard as a writer of the repository."""
    async with httpx.AsyncClient(base_url=app.base_url, timeout=30) as client:
        await sign_in(client, app.settings, "alice", {FULL: "write"})
        yield client


async def card_title(client: httpx.AsyncClient, pid: str) -> str:
    """The title on `pid`'s card of the board, as the browser would show it."""
    page = await client.get("/")
    assert page.status_code == 200
    card = re.search(rf'<article [^>]*id="card-{re.escape(pid)}".*?</article>', page.text, re.S)
    assert card is not None, f"no card for {pid}"
    title = re.search(r'<div class="title">(.*?)</div>', card.group(0), re.S)
    assert title is not None
    return html.unescape(title.group(1))


async def opened(world: World, title: str = "Fix the login page") -> tuple[str, int, str]:
    """An issue pipeline whose run finished with a commit, so the reporter opened its pull
    request: (pipeline id, pull request number, branch)."""
    number, run_id = await world.accept(title)
    branch = await world.branch(number)
    bare = world.gh.fake.bare_path(OWNER, REPO)
    tree = run_git(bare, "rev-parse", "main^{tree}").stdout.decode().strip()
    commit = run_git(bare, "commit-tree", tree, "-p", "main", "-m", "work").stdout.decode()
    run_git(bare, "update-ref", f"refs/heads/{branch}", commit.strip())  # the run's push
    await world.started(run_id)
    await world.emit(run_id, finished(run_id, commits=1))
    await world.settle()
    [pull] = world.state.pulls_for(branch)
    return pipeline_id(FULL, number), pull.number, branch


async def renamed(
    world: World, app: RunningApp, number: int, head: str, title: str, repo: str = FULL
) -> str:
    """A signed `pull_request.edited` delivery through the edge, then handled from the queue
    as the App worker handles it; what the worker says."""
    payload: dict[str, Any] = json.loads(
        (world.corpora / "webhooks" / "pull_request.edited.1.json").read_text()
    )
    payload["repository"].update(name=REPO, full_name=FULL, default_branch="main")
    payload["repository"]["owner"] = {**payload["repository"]["owner"], "login": OWNER}
    payload["installation"] = {"id": world.installation_id, "node_id": "MDIz"}
    payload["number"] = number
    payload["pull_request"].update(number=number, title=title)
    payload["pull_request"]["head"].update(ref=head)
    payload["pull_request"]["head"]["repo"] = {**payload["repository"], "full_name": repo}
    delivery = str(uuid.uuid4())
    response = app.deliver("pull_request", json.dumps(payload).encode(), delivery=delivery)
    assert (response.status_code, response.json()) == (202, {"queued": True})
    job = app.job(delivery)
    assert job is not None and job.function == "handle_event"
    ctx = {"redis": world.pool, "job_try": 1, SERVICES_KEY: world.services}
    return await handle_event(ctx, *copy.deepcopy(job.args))


async def test_a_card_shows_the_title_of_the_pull_request_trimo_opened_or_found(
    world: World, viewer: httpx.AsyncClient
) -> None:
    pid, number, _ = await opened(world, "Fix the login page")
    assert await card_title(viewer, pid) == "Fix the login page"
    world.state.refuse_pull("exists")  # one is opened by hand meanwhile: Trimo finds it
    found, found_number, branch = await opened(world, "Speed up the search")
    [pull] = world.state.pulls_for(branch)
    assert pull.title == "Opened by hand" and found_number != number
    assert await card_title(viewer, found) == "Opened by hand"
    page = (await viewer.get(f"/pipelines/{found}")).text
    assert "<h1>Opened by hand <span" in page and f"pull request #{found_number}" in page


async def test_renaming_the_pull_request_renames_the_card(
    world: World, app: RunningApp, viewer: httpx.AsyncClient
) -> None:
    pid, number, branch = await opened(world)
    result = await renamed(world, app, number, branch, "Log in with a passkey")
    assert result == "handled pull_request.edited"
    assert await card_title(viewer, pid) == "Log in with a passkey"
    # Another pull request from a branch of the same name (a fork's) renames nothing.
    await renamed(world, app, number + 100, branch, "Hijacked", repo="mallory/widgets")
    assert await card_title(viewer, pid) == "Log in with a passkey"


async def card_event(lines: AsyncIterator[str], pid: str, title: str) -> None:
    """Read the board's stream until a card of `pid` shows `title`."""
    data = ""
    async for line in lines:
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
        elif line == "" and data:
            found = json.loads(data)
            if found.get("id") == pid and title in found.get("html", ""):
                return
            data = ""
    raise AssertionError("the board's stream ended")


async def test_an_open_board_redraws_a_renamed_card(
    world: World, app: RunningApp, viewer: httpx.AsyncClient
) -> None:
    pid, number, branch = await opened(world)
    async with viewer.stream("GET", "/events/board") as response:
        lines = response.aiter_lines()
        deadline = time.monotonic() + 30
        async for line in lines:
            if line == "event: hello":
                break
        while (await world.pool.pubsub_numsub(CHANGES))[0][1] < 1:
            assert time.monotonic() < deadline, "the board's feed never subscribed"
            await asyncio.sleep(0.02)
        await renamed(world, app, number, branch, "Renamed while watched")
        await asyncio.wait_for(card_event(lines, pid, "Renamed while watched"), 60)


async def test_renaming_a_pull_requests_own_pipeline_renames_its_card(
    world: World, app: RunningApp, viewer: httpx.AsyncClient, redis_url: str
) -> None:
    pull = world.state.add_pull(
        OWNER, REPO, title="Old name", body="", user="alice", head_ref="feature",
        base_ref="main", head_sha="0" * 40, base_sha="0" * 40,
    )  # fmt: skip
    pid = pipeline_id(FULL, pull.number)
    pipeline = own_pipeline(pid, pull.number)
    await seed(redis_url, pipeline, make_run(f"{pid}-r1"))
    assert await card_title(viewer, pid) == "Old name"
    assert await renamed(world, app, pull.number, "feature", "New name") == (
        "handled pull_request.edited"
    )
    assert await card_title(viewer, pid) == "New name"


def own_pipeline(pid: str, number: int) -> Pipeline:
    """A pipeline of pull request `number` of the repository (its own kind)."""
    return Pipeline(
        id=pid, repo=FULL, number=number, kind="pull", branch="feature", base_branch="main",
        clone_url=f"http://git.example.com/{FULL}.git", installation_id=1, title="Old name",
    )  # fmt: skip


async def test_a_hostile_title_is_cut_folded_and_escaped(
    world: World, app: RunningApp, viewer: httpx.AsyncClient
) -> None:
    pid, number, branch = await opened(world)
    await renamed(world, app, number, branch, HOSTILE)
    kept = await pull_title_of(world.pool, pid)
    assert len(kept) == PULL_TITLE_CHARS
    shown = await card_title(viewer, pid)
    assert shown.startswith('<script>alert("x")</script><img src=x onerror=alert(1)> X-Evil: 1 A')
    assert len(shown) == TITLE_ON_CARD and shown.endswith("…") and "\n" not in shown
    for page in ((await viewer.get("/")).text, (await viewer.get(f"/pipelines/{pid}")).text):
        assert "<script>alert" not in page and "<img src=x" not in page
        assert "&lt;script&gt;alert(" in page
        assert "A" * (PULL_TITLE_CHARS + 1) not in page
