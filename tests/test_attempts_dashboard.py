"""Attempts on the dashboard: the ranked table with hostile agent names and last words
escaped, Pick only for people with write access (a forged one refused), the attempts'
options on the run forms, and each attempt's diff against where the set started."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from arq.connections import ArqRedis, create_pool
from pydantic import SecretStr

from app.conversation.policy import RunSettings
from app.dashboard.attempts import load_diffs, sets_of
from app.dashboard.data import ANSWER_CHARS, answers_of, remember_answer
from app.dashboard.pages import render
from app.dashboard.requests import (
    Attempts,
    DashboardAsk,
    FollowUp,
    FormError,
    parse_follow_up,
    parse_new_pipeline,
    parse_pick,
)
from app.github.client import GitHubApp
from app.runs.pipelines import AttemptSet, Pipeline, PipelineRun, Pipelines
from app.settings import AppSettings
from runner.contract import MAX_ATTEMPTS
from runner.diffsummary import DiffSummary, FileChange
from runner.events import Usage
from runner.job import CommitInfo, Outcome, Resources, RunFinished
from runner.ranking import MAX_LAST_WORD
from runner.redisurl import redis_settings
from tests.dashboard_helpers import dashboard_settings, make_pipeline, signed_in
from tests.fakegithub import RunningFakeGitHub
from tests.webhook_helpers import RunningApp, running_app

pytestmark = [pytest.mark.redis]

SCRIPT = "<script>alert('agent')</script>"
MARKDOWN = "**kept** [click](javascript:alert(1)) <img src=x onerror=alert(2)>"
LONG = "y" * 1000  # the most a runner sends


def settings_for(agent: str) -> RunSettings:
    return RunSettings(
        agent=agent, image="i", label="default", timeout_minutes=5, network="none",
        resources=Resources(),
    )  # fmt: skip


async def seed_attempts(
    redis_url: str,
    pipeline: Pipeline,
    agents: list[str],
    words: list[str],
    *,
    ended: int | None = None,
    heads: list[str | None] | None = None,
    start_sha: str | None = None,
) -> AttemptSet:
    """A set of attempts of `agents` on `pipeline`, the first `ended` (all) finished with
    one commit each (none for a head of None) and `words` as their last word."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        store = Pipelines(client)  # type: ignore[arg-type]
        runs = [
            PipelineRun(
                run_id=f"{pipeline.id}-s.{k}",
                prompt="Answer it",
                settings=settings_for(agent),
                requested_by="alice",
                thread=pipeline.number,
            )
            for k, agent in enumerate(agents, 1)
        ]
        attempt_set = AttemptSet(id=runs[0].run_id, runs=[r.run_id for r in runs])
        await store.add_attempts(pipeline, runs, attempt_set)
        await store.change_attempt_set(
            pipeline.id, attempt_set.id, lambda s: setattr(s, "start_sha", start_sha)
        )
        now = datetime.now(UTC)
        for k, run in enumerate(runs[: len(runs) if ended is None else ended]):
            await store.mark_running(run.run_id, runner="runner-1", started_at=now)
            head = heads[k] if heads else f"{k + 1:040x}"
            finished = RunFinished(
                run_id=run.run_id,
                outcome=Outcome.SUCCESS,
                head_sha=head,
                commits=[CommitInfo(sha=head, subject="Answer")] if head else [],
                diff=DiffSummary(files=[FileChange(path=f"f{i}", added=1) for i in range(k + 1)]),
                usage=Usage(input_tokens=1000 * (k + 1), output_tokens=10, cost_usd=0.5),
                last_word=words[k],
                at=now + timedelta(seconds=k + 1),
            )
            await store.finish(finished)
        saved = await store.get(pipeline.id)
        assert saved is not None
        found = saved.attempt_set(attempt_set.id)
        assert found is not None
        return found
    finally:
        await client.aclose()


@pytest.fixture
def dash(redis_url: str) -> Iterator[RunningApp]:
    with running_app(dashboard_settings(redis_url)) as running:
        yield running


def client_as(app: RunningApp, login: str, role: str) -> tuple[httpx.Client, str]:
    return signed_in(app.base_url, app.settings, login, {"o/r": role})


def dashboard_jobs(app: RunningApp) -> list[dict[str, object]]:
    return [job.args[2] for job in app.queued().values() if job.function == "handle_event"]


def test_the_table_shows_hostile_names_and_last_words_as_text(
    dash: RunningApp, redis_url: str
) -> None:
    pipeline = make_pipeline("o/r", 7, "Answer")
    asyncio.run(seed_attempts(redis_url, pipeline, [SCRIPT, "**bold**", "z" * 300],
                              [SCRIPT, MARKDOWN, LONG]))  # fmt: skip
    client, _ = client_as(dash, "alice", "write")
    with client:
        page = client.get("/pipelines/o.r.7")
    assert page.status_code == 200
    html = page.text
    assert SCRIPT not in html and "<img src=x" not in html and 'href="javascript' not in html
    assert "&lt;script&gt;alert(&#39;agent&#39;)&lt;/script&gt;" in html
    assert "**kept** [click](javascript:alert(1)) &lt;img" in html  # markdown as written…
    assert "<strong>kept" not in html  # …never rendered
    assert "y" * MAX_LAST_WORD not in html and "y" * (MAX_LAST_WORD - 1) + "…" in html
    assert 'class="attempts"' in html and 'data-picked=""' in html
    assert "diff, cost. None kept yet: pick one" in html
    assert html.count('class="attempt') >= 3 and 'data-place="1"' in html
    assert 'class="attempts-total" data-label="Total cost">$1.50<' in html
    for number in (1, 2, 3):
        assert f'id="pick-{number}"' in html
    assert 'data-src="/pipelines/o.r.7/attempts/o.r.7-s.1/diff?v=' in html


def test_only_people_who_may_write_see_pick_and_a_forged_pick_is_refused(
    dash: RunningApp, redis_url: str
) -> None:
    pipeline = make_pipeline("o/r", 8, "Answer")
    asyncio.run(seed_attempts(redis_url, pipeline, ["script", "script"], ["a", "b"]))
    reader, reader_csrf = client_as(dash, "rita", "read")
    with reader:
        page = reader.get("/pipelines/o.r.8")
        assert page.status_code == 200 and 'class="attempts"' in page.text
        assert 'id="pick-' not in page.text and 'class="pick"' not in page.text
        forged = reader.post("/pipelines/o.r.8/pick", data={"csrf": reader_csrf, "attempt": "1"})
        assert forged.status_code == 403
    writer, csrf = client_as(dash, "alice", "write")
    with writer:
        no_token = writer.post("/pipelines/o.r.8/pick", data={"attempt": "1"})
        assert no_token.status_code == 403
        for bad in ("9", "-1", "x", "", "1" * 50):
            wrong = writer.post("/pipelines/o.r.8/pick", data={"csrf": csrf, "attempt": bad})
            assert wrong.status_code == 303 and "error=Which%20attempt" in wrong.headers["location"]
        asked = writer.post("/pipelines/o.r.8/pick", data={"csrf": csrf, "attempt": "2"})
        assert asked.status_code == 303
        assert asked.headers["location"] == "/pipelines/o.r.8?asked=pick"
    jobs = dashboard_jobs(dash)
    assert [(job["action"], job["ask"]) for job in jobs] == [
        ("pick", {"pipeline": "o.r.8", "attempt": "2"})
    ]
    assert jobs[0]["sender"] == {"login": "alice", "type": "User"}


def test_an_attempt_still_running_or_without_commits_offers_no_pick(redis_url: str) -> None:
    pipeline = make_pipeline("o/r", 9, "Answer")
    attempt_set = asyncio.run(
        seed_attempts(redis_url, pipeline, ["script"] * 3, ["done", "nothing"], ended=2,
                      heads=["a" * 40, None])
    )  # fmt: skip
    saved = asyncio.run(_get(redis_url, pipeline.id))
    view = sets_of(saved)[0]
    assert view.id == attempt_set.id and not view.ended
    by_number = {a.row.number: a for a in view.attempts}
    assert by_number[1].pickable and by_number[2].why_not == "no commits"
    assert by_number[3].why_not == "still running" and not by_number[3].pickable
    html = render(
        "_attempts.html.j2", attempt_sets=[view], pipeline=saved, may_act=True, csrf="t",
        web="https://example.com/o/r", now=datetime.now(UTC),
    )  # fmt: skip
    assert 'id="pick-1"' in html and 'id="pick-2"' not in html and 'id="pick-3"' not in html
    assert "Running: ranked by" in html and 'data-place="0"' in html


async def _get(redis_url: str, pipeline_id: str) -> Pipeline:
    client = aioredis.Redis.from_url(redis_url)
    try:
        found = await Pipelines(client).get(pipeline_id)  # type: ignore[arg-type]
        assert found is not None
        return found
    finally:
        await client.aclose()


def test_the_kept_attempt_and_the_reason_of_a_switch_are_shown(redis_url: str) -> None:
    pipeline = make_pipeline("o/r", 10, "Answer")
    attempt_set = asyncio.run(seed_attempts(redis_url, pipeline, ["script"] * 2, ["a", "b"]))
    saved = asyncio.run(_get(redis_url, pipeline.id))
    kept = saved.attempt_set(attempt_set.id)
    assert kept is not None
    kept.picked, kept.picked_by, kept.picked_at = 2, "alice", datetime.now(UTC)
    kept.pick_note = f"Switched from attempt #1 by @alice: #1 is on `{SCRIPT}` {SCRIPT}"
    html = render(
        "_attempts.html.j2", attempt_sets=sets_of(saved), pipeline=saved, may_act=True,
        csrf="t", web="https://example.com/o/r", now=datetime.now(UTC),
    )  # fmt: skip
    assert 'data-picked="2"' in html and "Attempt #2 is kept" in html and "@alice" in html
    assert 'class="attempt kept" data-attempt="2"' in html
    assert 'id="pick-2"' not in html and ">Switch to #1</button>" in html
    assert "Switched from attempt #1" in html and SCRIPT not in html
    assert "is on <code>&lt;script&gt;" in html and "`" not in html.split("pick-note")[1][:300]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"attempts": "3"}, Attempts(3, ())),
        ({"agents": "script,claude"}, Attempts(None, ("script", "claude"))),
        ({"attempts": "2", "agents": "script,claude"}, Attempts(2, ("script", "claude"))),
        ({"attempts": "", "agents": ""}, Attempts()),
        ({"attempts": "0"}, f"from 1 to {MAX_ATTEMPTS}"),
        ({"attempts": "2.5"}, f"from 1 to {MAX_ATTEMPTS}"),
        ({"attempts": "٣"}, f"from 1 to {MAX_ATTEMPTS}"),  # a digit, but not ASCII
        ({"attempts": str(MAX_ATTEMPTS + 1)}, f"from 1 to {MAX_ATTEMPTS}"),
        ({"attempts": "9" * 400}, f"from 1 to {MAX_ATTEMPTS}"),
        ({"agents": f"script,{SCRIPT}"}, "Unknown agent"),
        ({"agents": "script,script"}, "named twice"),
        ({"agents": "script,claude", "agent": "codex"}, "not both"),
        ({"attempts": str(MAX_ATTEMPTS), "agents": "script,claude"}, "attempts; at most"),
    ],
)
def test_the_attempts_options_are_read_with_clear_refusals(
    fields: dict[str, str], expected: Attempts | str
) -> None:
    parsed = parse_follow_up({"prompt": "Do it", **fields})
    if isinstance(expected, Attempts):
        assert parsed == FollowUp("Do it", fields.get("agent", ""), expected)
    else:
        assert isinstance(parsed, FormError) and expected in parsed.message
    new = parse_new_pipeline({"repo": "o/r", "prompt": "Do it", **fields}, {"o/r": "o/r"})
    assert isinstance(new, FormError) == isinstance(parsed, FormError)


def test_a_pick_names_one_of_the_pipelines_attempts() -> None:
    assert parse_pick({"attempt": "2"}, [1, 2]) == 2
    for bad in ("3", "0", "", " 2x", "²"):
        assert isinstance(parse_pick({"attempt": bad}, [1, 2]), FormError)


def test_the_request_carries_only_known_agents_each_once() -> None:
    ask = DashboardAsk(agents=f"script, claude,script,{SCRIPT},,codex", attempts=2)
    assert ask.agent_names() == ("script", "claude", "codex")
    assert Attempts(2, ("script", "claude")).ask() == {"attempts": "2", "agents": "script,claude"}
    assert Attempts().ask() == {}


def test_the_forms_offer_the_attempts_options_and_queue_them(
    dash: RunningApp, redis_url: str
) -> None:
    pipeline = make_pipeline("o/r", 11, "Answer")
    asyncio.run(seed_attempts(redis_url, pipeline, ["script"] * 2, ["a", "b"]))
    client, csrf = client_as(dash, "alice", "write")
    with client:
        page = client.get("/pipelines/o.r.11")
        assert 'name="attempts"' in page.text and 'name="agents" value="script"' in page.text
        assert f'max="{dash.settings.policy_max_attempts}"' in page.text
        bad = client.post(
            "/pipelines/o.r.11/follow-up",
            data={"csrf": csrf, "prompt": "Again", "attempts": "0"},
        )
        assert bad.status_code == 303 and "error=Attempts" in bad.headers["location"]
        shown = client.get(bad.headers["location"])
        assert "Attempts: a whole number from 1 to" in shown.text
        asked = client.post(
            "/pipelines/o.r.11/follow-up",
            data={"csrf": csrf, "prompt": "Again", "attempts": "2", "agents": ["script", "claude"]},
        )
        assert asked.status_code == 303
        new_form = client.get("/pipelines/new")
        assert 'name="attempts"' in new_form.text
        refused = client.post(
            "/pipelines/new",
            data={"csrf": csrf, "repo": "o/r", "prompt": "Go", "agents": ["script", "script"]},
        )
        assert refused.status_code == 400 and "named twice" in refused.text
        assert 'value="script" checked' in refused.text  # the form keeps what was chosen
    jobs = dashboard_jobs(dash)
    assert [(job["action"], job["ask"]) for job in jobs] == [
        ("run", {"pipeline": "o.r.11", "prompt": "Again", "agent": "", "attempts": "2",
                 "agents": "script,claude"}),
    ]  # fmt: skip


def test_answers_are_kept_short_plain_and_few(redis_url: str) -> None:
    async def go() -> None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            for k in range(7):
                await remember_answer(client, "o.r.12", "alice", f"**{k}** `x` " + "w " * 900)
            found = await answers_of(client, "o.r.12")
        finally:
            await client.aclose()
        assert [a.text[0] for a in found] == ["6", "5", "4", "3", "2"]
        assert all(len(a.text) <= ANSWER_CHARS and "`" not in a.text for a in found)

    asyncio.run(go())


# --- each attempt's diff, from GitHub's compare API (the stand-in computes it with git) ---

OWNER, REPO = "octo-org", "widgets"


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return done.stdout.strip()


async def test_each_attempt_is_compared_with_the_commit_the_set_started_from(
    redis_url: str, tmp_path: Path
) -> None:
    with RunningFakeGitHub() as fake:
        creds = fake.install_app(OWNER)
        fake.create_repo(OWNER, REPO, {"README.md": "# widgets\n"})
        settings = AppSettings(
            _env_file=None, github_app_id=creds.app_id, redis_url=redis_url,
            github_private_key=SecretStr(creds.private_key_pem), github_api_url=fake.api_url,
        )  # type: ignore[call-arg]  # fmt: skip
        work = tmp_path / "work"
        git(tmp_path, "clone", "-q", str(fake.fake.bare_path(OWNER, REPO)), str(work))
        pipeline = make_pipeline(f"{OWNER}/{REPO}", 3, "Work")
        pipeline.installation_id = fake.state.installation_for(OWNER).id
        git(work, "checkout", "-q", "-b", pipeline.branch)
        (work / "before.txt").write_text("earlier work\n")
        git(work, "add", "-A")
        git(work, "commit", "-qm", "Earlier")
        start = git(work, "rev-parse", "HEAD")
        heads = []
        for number, text in ((1, SCRIPT), (2, "two\n")):
            git(work, "checkout", "-q", "-b", f"{pipeline.branch}-attempt-{number}", start)
            (work / f"answer{number}.txt").write_text(text)
            git(work, "add", "-A")
            git(work, "commit", "-qm", f"Attempt {number}")
            heads.append(git(work, "rev-parse", "HEAD"))
        git(work, "push", "-q", "origin", "--all")
        attempt_set = await seed_attempts(
            redis_url, pipeline, ["script", SCRIPT, "script"], ["a", "b", "c"],
            heads=[*heads, None], start_sha=start,
        )  # fmt: skip
        pool: ArqRedis = await create_pool(redis_settings(redis_url))
        try:
            saved = await _get(redis_url, pipeline.id)
            diffs = await load_diffs(GitHubApp(settings, pool), saved, attempt_set)
        finally:
            await pool.aclose()
    assert [d.number for d in diffs] == [1, 2, 3]
    assert [f.name for f in diffs[0].diff.files] == ["answer1.txt"]  # not before.txt
    assert [f.name for f in diffs[1].diff.files] == ["answer2.txt"]
    assert diffs[2].diff.problem.startswith("No commits")
    html = render("_attempt_diffs.html.j2", diffs=diffs)
    assert SCRIPT not in html and "&lt;script&gt;" in html
    assert html.count('class="attempt-column"') == 3


def test_the_page_of_a_set_going_offers_to_stop_every_attempt(
    dash: RunningApp, redis_url: str
) -> None:
    pipeline = make_pipeline("o/r", 21, "Answer")
    attempt_set = asyncio.run(seed_attempts(redis_url, pipeline, ["script"] * 2, [], ended=0))

    async def mark_running() -> None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            await Pipelines(client).mark_running(attempt_set.runs[0], runner="r1")  # type: ignore[arg-type]
        finally:
            await client.aclose()

    asyncio.run(mark_running())
    client, _ = client_as(dash, "alice", "write")
    with client:
        page = client.get(f"/pipelines/{pipeline.id}")
    assert page.status_code == 200, page.text[-2000:]
    assert "Stop every attempt" in page.text and "Stop the active run" not in page.text
