"""The dashboard's pages, streams and actions over real HTTP, on a real Redis."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import redis

from app.dashboard.data import STARTED_PREFIX
from app.dashboard.site import sse
from app.github.installations import REPO_INSTALLATIONS
from app.runs.pipelines import CHANGES
from app.runs.previews import RECORD_PREFIX, PreviewRecord
from runner import __version__, contract
from runner.events import AssistantMessage, ToolCall
from runner.job import Outcome, RepoRef, RunFinished, RunStarted
from runner.previews.job import PreviewRequest
from runner.registry import RunnerInfo, now
from tests.dashboard_helpers import (
    dashboard_settings,
    make_pipeline,
    make_run,
    seed_sync,
    signed_in,
    wait_for_subscriber,
)
from tests.webhook_helpers import RunningApp, running_app

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture
def dash(redis_url: str) -> Iterator[RunningApp]:
    with running_app(dashboard_settings(redis_url)) as running:
        yield running


CSRF: dict[str, str] = {}


def client_as(app: RunningApp, login: str = "alice", role: str = "write") -> httpx.Client:
    """A client signed in as `login` with `role` on o/r (`root` is an admin)."""
    client, csrf = signed_in(app.base_url, app.settings, login, {"o/r": role})
    CSRF[login] = csrf
    return client


def test_signed_out_pages_send_to_sign_in(dash: RunningApp) -> None:
    for path in ("/", "/pipelines/o.r.1", "/runs/r1", "/fleet"):
        answer = dash.client.get(path)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/login")
    assert dash.client.get("/events/board").status_code == 401
    assert dash.client.post("/pipelines/o.r.1/stop", data={}).status_code == 401


def test_board_shows_only_what_the_viewer_sees_escaped(dash: RunningApp, redis_url: str) -> None:
    seed_sync(redis_url, make_pipeline("o/r", 1, HOSTILE), make_run("o.r.1-a", prompt=HOSTILE))
    seed_sync(redis_url, make_pipeline("o/r", 2, "Running one"), make_run("o.r.2-a"), "running")
    seed_sync(redis_url, make_pipeline("x/secret", 3, "Secret work"), make_run("x.secret.3-a"))
    with client_as(dash) as client:
        page = client.get("/")
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    html = page.text
    assert 'id="card-o.r.1"' in html and 'id="card-o.r.2"' in html
    assert "Secret work" not in html and "x/secret" not in html
    assert HOSTILE not in html and "&lt;script&gt;alert(" in html
    queued = html.split('id="col-queued"')[1].split('id="col-running"')[0]
    assert 'id="card-o.r.1"' in queued
    running = html.split('id="col-running"')[1].split('id="col-needs_you"')[0]
    assert 'id="card-o.r.2"' in running and "on runner-1" in running


def test_filters_narrow_the_board(dash: RunningApp, redis_url: str) -> None:
    seed_sync(redis_url, make_pipeline("o/r", 1, "By alice"), make_run("o.r.1-a", by="alice"))
    seed_sync(redis_url, make_pipeline("o/r", 2, "By bob"), make_run("o.r.2-a", by="bob"))
    with client_as(dash) as client:
        html = client.get("/", params={"person": "bob"}).text
    assert "By bob" in html and "By alice" not in html


def test_admin_sees_every_repository(dash: RunningApp, redis_url: str) -> None:
    seed_sync(redis_url, make_pipeline("x/secret", 3, "Secret work"), make_run("x.secret.3-a"))
    with client_as(dash, "root", role="read") as client:
        assert "Secret work" in client.get("/").text


def test_pipeline_and_run_pages(dash: RunningApp, redis_url: str) -> None:
    pipeline = make_pipeline("o/r", 4, "Make it fast")
    seed_sync(
        redis_url, pipeline, make_run("o.r.4-a", prompt=HOSTILE), "finished", Outcome.FAILURE, 2
    )
    seed_sync(redis_url, make_pipeline("x/secret", 3), make_run("x.secret.3-a"))
    with client_as(dash) as client:
        page = client.get("/pipelines/o.r.4")
        assert page.status_code == 200
        assert "Make it fast" in page.text and "change 1" in page.text
        assert HOSTILE not in page.text and 'data-run="o.r.4-a"' in page.text
        assert 'id="follow-up"' in page.text and 'id="retry"' in page.text
        run = client.get("/runs/o.r.4-a")
        assert run.status_code == 200 and 'data-stream="/runs/o.r.4-a/events"' in run.text
        assert client.get("/pipelines/x.secret.3").status_code == 404
        assert client.get("/runs/x.secret.3-a").status_code == 404
        assert client.get("/runs/x.secret.3-a/events").status_code == 404
        assert client.get("/pipelines/..%2F..").status_code == 404
    with client_as(dash, "reader", role="read") as client:
        page = client.get("/pipelines/o.r.4")
        assert page.status_code == 200 and 'id="follow-up"' not in page.text


def queued_dashboard_jobs(app: RunningApp) -> list[tuple[str, dict[str, object]]]:
    return [
        (job.args[0], job.args[2])
        for job in app.queued().values()
        if job.function == "handle_event"
    ]


def test_actions_need_the_csrf_token_and_write_access(dash: RunningApp, redis_url: str) -> None:
    seed_sync(redis_url, make_pipeline("o/r", 5, "Go"), make_run("o.r.5-a"), "running")
    with client_as(dash) as client:
        forged = client.post("/pipelines/o.r.5/stop", data={"run_id": "o.r.5-a"})
        assert forged.status_code == 403
        wrong = client.post("/pipelines/o.r.5/stop", data={"run_id": "o.r.5-a", "csrf": "nope"})
        assert wrong.status_code == 403
        assert queued_dashboard_jobs(dash) == []
        asked = client.post(
            "/pipelines/o.r.5/follow-up",
            data={"csrf": CSRF["alice"], "prompt": "Now add tests", "agent": "script"},
        )
        assert (
            asked.status_code == 303 and asked.headers["location"] == "/pipelines/o.r.5?asked=run"
        )
        empty = client.post(
            "/pipelines/o.r.5/follow-up", data={"csrf": CSRF["alice"], "prompt": " "}
        )
        assert empty.status_code == 303 and "error=" in empty.headers["location"]
        stop = client.post(
            "/pipelines/o.r.5/stop",
            headers={"X-CSRF-Token": CSRF["alice"]},
            data={"run_id": "o.r.5-a"},
        )
        assert stop.status_code == 303
    with client_as(dash, "reader", role="read") as client:
        refused = client.post("/pipelines/o.r.5/retry", data={"csrf": CSRF["reader"]})
        assert refused.status_code == 403
    jobs = sorted(queued_dashboard_jobs(dash), key=lambda job: str(job[1]["action"]))
    assert [(event, payload["action"]) for event, payload in jobs] == [
        ("trimo_dashboard", "run"), ("trimo_dashboard", "stop"),
    ]  # fmt: skip
    payload = jobs[0][1]
    assert payload["sender"] == {"login": "alice", "type": "User"}
    assert payload["ask"] == {"pipeline": "o.r.5", "prompt": "Now add tests", "agent": "script"}
    assert payload["repository"]["full_name"] == "o/r"  # type: ignore[index]
    assert jobs[1][1]["ask"] == {"pipeline": "o.r.5", "run_id": "o.r.5-a"}


def add_event(client: redis.Redis, run_id: str, event: object) -> str:
    raw = event.model_dump_json()  # type: ignore[attr-defined]
    return client.xadd(contract.run_events(run_id), {"event": raw}).decode()


class Events:
    """Server-sent events read off one streaming response."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.iter_lines()

    def next(self, count: int) -> list[tuple[str, str, str]]:
        """(id, event, data) of the next `count` events."""
        found: list[tuple[str, str, str]] = []
        fields: dict[str, list[str]] = {}
        for line in self._lines:
            if line == "":
                if "event" in fields:
                    data = "\n".join(fields.get("data", []))
                    found.append((fields.get("id", [""])[0], fields["event"][0], data))
                fields = {}
                if len(found) >= count:
                    return found
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields.setdefault(name, []).append(value)
        raise AssertionError(f"the stream ended after {len(found)} events")


def test_run_log_streams_resumes_and_ends(dash: RunningApp, redis_url: str) -> None:
    seed_sync(redis_url, make_pipeline("o/r", 6), make_run("o.r.6-a"), "running")
    started = RunStarted(
        run_id="o.r.6-a", runner="runner-1", agent="script", image="i", branch="b",
        base_sha="0" * 40,
    )  # fmt: skip
    first = add_event(dash.redis, "o.r.6-a", started)
    second = add_event(dash.redis, "o.r.6-a", ToolCall(name="Bash", summary=f"echo {HOSTILE}"))
    with client_as(dash) as client:
        with client.stream("GET", "/runs/o.r.6-a/events") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            events = Events(response)
            backlog = events.next(2)
            assert [e[0] for e in backlog] == [first, second]
            assert "started" in backlog[0][2] and HOSTILE not in backlog[1][2]
            assert "&lt;script&gt;" in backlog[1][2]
            third = add_event(dash.redis, "o.r.6-a", AssistantMessage(text="All done"))
            live = events.next(1)
            assert live[0][0] == third and "All done" in live[0][2]
        headers = {"Last-Event-ID": second}
        with client.stream("GET", "/runs/o.r.6-a/events", headers=headers) as response:
            events = Events(response)
            resumed = events.next(1)
            assert [e[0] for e in resumed] == [third]
            add_event(
                dash.redis, "o.r.6-a", RunFinished(run_id="o.r.6-a", outcome=Outcome.CANCELLED)
            )
            end = events.next(2)
            assert [e[1] for e in end] == ["line", "end"]
            assert json.loads(end[1][2]) == {"outcome": "cancelled"}


def test_board_stream_moves_cards_the_viewer_may_see(dash: RunningApp, redis_url: str) -> None:
    with client_as(dash) as client, client.stream("GET", "/events/board") as response:
        events = Events(response)
        assert events.next(1)[0][1] == "hello"
        wait_for_subscriber(dash.redis, CHANGES)
        # Sorted before o.r.7: sent in the same batch or an earlier one, it would come first.
        seed_sync(redis_url, make_pipeline("a/secret", 3, "Secret"), make_run("a.secret.3-a"))
        seed_sync(redis_url, make_pipeline("o/r", 7, "Live one"), make_run("o.r.7-a"))
        event = events.next(1)[0]
        assert event[1] == "card"
        card = json.loads(event[2])
        assert card["id"] == "o.r.7" and card["column"] == "queued"
        assert "Live one" in card["html"]


def test_a_fleet_page_that_changed_before_its_stream_began_is_told_at_once(
    dash: RunningApp,
) -> None:
    with client_as(dash, "root", role="read") as client:
        html = client.get("/fleet").text
        shown = html.split('data-live="/events/fleet?shown=', 1)[1].split('"', 1)[0]
        info = RunnerInfo(
            id="runner-early", host="box", labels=["default"], capacity=1, running=[],
            version="0.1.0", pid=1, started_at=now(), seen_at=now(),
        )  # fmt: skip
        dash.redis.set(contract.runner_info(info.id), info.model_dump_json(), ex=60)
        dash.redis.sadd(contract.RUNNERS, info.id)
        with client.stream("GET", f"/events/fleet?shown={shown}") as response:
            assert [e[1] for e in Events(response).next(2)] == ["hello", "changed"]


def test_fleet_is_for_admins(dash: RunningApp, redis_url: str) -> None:
    info = RunnerInfo(
        id="runner-1", host="box", labels=["default"], capacity=2, running=["o.r.8-a"],
        version="0.1.0", pid=1, started_at=now(), seen_at=now(),
    )  # fmt: skip
    dash.redis.set(contract.runner_info("runner-1"), info.model_dump_json())
    dash.redis.sadd(contract.RUNNERS, "runner-1")
    dash.redis.zadd(contract.run_queue("gpu"), {"job-1": 1})
    seed_sync(redis_url, make_pipeline("o/r", 8), make_run("o.r.8-a"))
    with client_as(dash) as client:
        assert client.get("/fleet").status_code == 403
    with client_as(dash, "root", role="read") as client:
        html = client.get("/fleet").text
    assert 'data-runner="runner-1"' in html and "1 of 2" in html
    assert 'data-label="gpu" data-depth="1"' in html and "which no online runner serves" in html


def test_sse_text_puts_each_line_in_its_own_data_field() -> None:
    assert sse("line", "a\nb", "1-0") == "id: 1-0\nevent: line\ndata: a\ndata: b\n\n"


def test_the_board_shows_a_change_after_it_read_the_pipeline_once(
    dash: RunningApp, redis_url: str
) -> None:
    pipeline, run = make_pipeline("o/r", 9, "Cached"), make_run("o.r.9-a")
    seed_sync(redis_url, pipeline, run, "running")
    with client_as(dash) as client:
        before = client.get("/").text
        seed_sync(redis_url, pipeline, run, "finished", Outcome.TIMED_OUT)
        after = client.get("/").text
    running = before.split('id="col-running"')[1].split('id="col-needs_you"')[0]
    assert 'id="card-o.r.9"' in running
    needs_you = after.split('id="col-needs_you"')[1].split('id="col-review"')[0]
    assert 'id="card-o.r.9"' in needs_you and "timed out" in needs_you


def test_new_pipeline_form_queues_a_request_for_a_repository_the_viewer_may_write(
    dash: RunningApp, redis_url: str
) -> None:
    with client_as(dash) as client:
        form = client.get("/pipelines/new")
        assert form.status_code == 200 and "<option >o/r</option>" in form.text.replace(
            "<option>", "<option >"
        )
        token = CSRF["alice"]
        missing = client.post("/pipelines/new", data={"csrf": token, "repo": "o/r", "prompt": "Go"})
        assert missing.status_code == 400 and "not installed" in missing.text
        dash.redis.hset(REPO_INSTALLATIONS, "o/r", "7")
        other = client.post("/pipelines/new", data={"csrf": token, "repo": "x/y", "prompt": "Go"})
        assert other.status_code == 400 and "Pick one of your repositories" in other.text
        bad = client.post(
            "/pipelines/new",
            data={"csrf": token, "repo": "o/r", "prompt": "Go", "base_branch": "../main"},
        )
        assert bad.status_code == 400 and "base branch" in bad.text
        assert "Go" in bad.text  # what was typed is kept
        started = client.post(
            "/pipelines/new",
            data={
                "csrf": token,
                "repo": "O/R",
                "prompt": "Add a health endpoint",
                "agent": "script",
            },
        )
        assert started.status_code == 303
        waiting = started.headers["location"]
        delivery = waiting.removeprefix("/started/")
        assert waiting.startswith("/started/dash-")
        assert 'id="starting"' in client.get(waiting).text  # not made yet: it looks again
        seed_sync(redis_url, make_pipeline("o/r", 40, "Made"), make_run("o.r.40-a"))
        dash.redis.set(STARTED_PREFIX + delivery, "o.r.40")
        landed = client.get(waiting)  # made: Start lands on the new pipeline
        assert landed.status_code == 303 and landed.headers["location"] == "/pipelines/o.r.40"
        assert client.get("/started/bad%20id").status_code == 404
        forged = client.post("/pipelines/new", data={"repo": "o/r", "prompt": "Go"})
        assert forged.status_code == 403
    jobs = queued_dashboard_jobs(dash)
    assert len(jobs) == 1
    payload = jobs[0][1]
    assert payload["action"] == "new" and payload["installation"] == {"id": 7}
    assert payload["ask"] == {
        "prompt": "Add a health endpoint",
        "agent": "script",
        "base_branch": "",
    }
    with client_as(dash, "reader", role="read") as client:
        assert "no repository" in client.get("/pipelines/new").text


def seed_preview(redis_url: str, pipeline_id: str, **fields: object) -> None:
    request = PreviewRequest(
        preview_id="pv-1", pipeline=pipeline_id, repo=RepoRef(full_name="o/r", clone_url="x"),
        branch="trimo/6-work", command="make serve", port=8000,
    )  # fmt: skip
    record = PreviewRecord(
        pipeline=pipeline_id, repo="o/r", installation_id=1, number=6, branch="trimo/6-work",
        request=request, **fields,
    )  # fmt: skip
    client = redis.Redis.from_url(redis_url)
    client.set(RECORD_PREFIX + pipeline_id, record.model_dump_json())
    client.close()


def test_the_pipeline_page_shows_its_preview_and_asks_for_one(
    dash: RunningApp, redis_url: str
) -> None:
    seed_sync(
        redis_url, make_pipeline("o/r", 6, "Preview me"), make_run("o.r.6-a"), "finished",
        commits=1,
    )  # fmt: skip
    with client_as(dash) as client:
        page = client.get("/pipelines/o.r.6")
        assert 'data-status="none"' in page.text and 'id="preview-start"' in page.text
        assert 'id="preview-stop"' not in page.text

        link = "https://previews.example.com/p/abc_DEF-123/"
        seed_preview(redis_url, "o.r.6", status="ready", url=link, sha="f" * 40)
        page = client.get("/pipelines/o.r.6")
        assert f'id="preview-link" href="{link}"' in page.text
        assert "Refresh the preview" in page.text and 'id="preview-stop"' in page.text

        seed_preview(redis_url, "o.r.6", status="ready", url='javascript:alert(1)//"', sha="f" * 40)
        page = client.get("/pipelines/o.r.6")
        assert "javascript:" not in page.text and 'id="preview-link"' not in page.text

        for path, action in (("preview", "preview"), ("preview-stop", "preview_stop")):
            asked = client.post(f"/pipelines/o.r.6/{path}", data={"csrf": CSRF["alice"]})
            assert asked.headers["location"] == f"/pipelines/o.r.6?asked={action}"
        assert "Asked." in client.get("/pipelines/o.r.6?asked=preview").text
    with client_as(dash, "reader", role="read") as client:
        page = client.get("/pipelines/o.r.6")
        assert 'id="preview-start"' not in page.text
        refused = client.post("/pipelines/o.r.6/preview", data={"csrf": CSRF["reader"]})
        assert refused.status_code == 403
    jobs = queued_dashboard_jobs(dash)
    assert sorted(str(payload["action"]) for _event, payload in jobs) == [
        "preview",
        "preview_stop",
    ]
    assert all(payload["ask"] == {"pipeline": "o.r.6"} for _event, payload in jobs)


def test_fleet_warns_of_runners_on_another_version(dash: RunningApp) -> None:
    for runner_id, version in (("same-1", __version__), ("old-1", "0.0.1")):
        info = RunnerInfo(
            id=runner_id, host="box", labels=["default"], capacity=1, running=[],
            version=version, pid=1, started_at=now(), seen_at=now(),
        )  # fmt: skip
        dash.redis.set(contract.runner_info(runner_id), info.model_dump_json())
        dash.redis.sadd(contract.RUNNERS, runner_id)
    with client_as(dash, "root", role="read") as client:
        html = client.get("/fleet").text
    assert (
        "version-skew" in html and f"another version of Trimo than this App ({__version__})" in html
    )
    assert 'class="runner skew" data-runner="old-1"' in html
    assert 'class="runner" data-runner="same-1"' in html
