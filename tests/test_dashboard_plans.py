"""Discovery plans on the dashboard: hostile Markdown rendered inert, the Plan ready state,
the Implement this plan button, and no preview offered before the branch exists."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from html.parser import HTMLParser

import pytest
from arq.connections import ArqRedis

from app.dashboard.board import state_words
from app.dashboard.plans import TAGS, plan_html
from app.reporting.runview import IMPLEMENT_PLAN
from app.runs.pipelines import Pipelines
from app.runs.summary import summarise
from runner.job import Outcome, RunFinished
from tests.dashboard_helpers import (
    dashboard_settings,
    make_pipeline,
    make_run,
    seed_sync,
    signed_in,
)
from tests.test_dashboard_site import queued_dashboard_jobs
from tests.webhook_helpers import RunningApp, running_app

HOSTILE_PLAN = """## Findings
<script>alert(1)</script><img src=x onerror=alert(2)>
<a href="javascript:alert(3)">raw link</a> [md link](javascript:alert(4))
[data link](data:text/html;base64,PHNjcmlwdD5hbGVydCg1KTwvc2NyaXB0Pg==)
[vb](vbscript:msgbox) ![pixel](https://example.com/pixel.png) <iframe src="https://example.com">
<style>body{display:none}</style><div onclick="alert(6)">div</div>
[good](https://example.com/docs "Docs")

1. First step with `code <b>`
2. Second step

| file | change |
|------|--------|
| a.py | fix    |

```html
<script>alert(7)</script>
```
"""


class Tags(HTMLParser):
    """Every element and attribute a browser would make of some HTML."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attributes: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes += [(tag, name, value or "") for name, value in attrs]


def test_a_hostile_plan_renders_inert() -> None:
    html = str(plan_html(HOSTILE_PLAN))
    parsed = Tags()
    parsed.feed(html)
    assert parsed.tags <= TAGS and not {"script", "img", "iframe", "style", "div"} & parsed.tags
    assert parsed.attributes == [
        ("a", "href", "https://example.com/docs"),
        ("a", "title", "Docs"),
        ("a", "rel", "noopener nofollow noreferrer"),
    ]
    assert "<h2>Findings</h2>" in html and "<ol>" in html and "<table>" in html
    assert "&lt;script&gt;alert(7)&lt;/script&gt;" in html  # code shown, not run
    assert "<code>code &lt;b&gt;</code>" in html


def test_a_huge_plan_is_cut() -> None:
    assert len(plan_html("word " * 100_000)) < 70_000


@pytest.fixture
def dash(redis_url: str) -> Iterator[RunningApp]:
    with running_app(dashboard_settings(redis_url)) as running:
        yield running


def discovered(redis_url: str, run_id: str, plan: str) -> None:
    async def finish() -> None:
        client = ArqRedis.from_url(redis_url)
        try:
            done = RunFinished(run_id=run_id, outcome=Outcome.SUCCESS, plan=plan)
            await Pipelines(client).finish(done)
        finally:
            await client.aclose()

    asyncio.run(finish())


def seed_discovery(redis_url: str, number: int) -> str:
    run = make_run(f"o.r.{number}-d", prompt="Why is login slow?")
    seed_sync(redis_url, make_pipeline("o/r", number, "Slow login"),
              run.model_copy(update={"mode": "discover"}), "running")  # fmt: skip
    discovered(redis_url, run.run_id, HOSTILE_PLAN)
    return f"o.r.{number}"


def test_a_finished_discovery_is_plan_ready_with_a_button_and_no_preview(
    dash: RunningApp, redis_url: str
) -> None:
    pipeline_id = seed_discovery(redis_url, 5)
    client, csrf = signed_in(dash.base_url, dash.settings, "alice", {"o/r": "write"})
    with client:
        board = client.get("/").text
        card = board.split(f'id="card-{pipeline_id}"')[1].split("</article>")[0]
        assert 'data-state="plan ready"' in board and "plan ready" in card
        page = client.get(f"/pipelines/{pipeline_id}").text
        assert 'id="implement"' in page and "<h2>Findings</h2>" in page
        assert "<script>alert(1)" not in page
        assert 'id="preview-start"' not in page and 'id="preview-unpushed"' in page
        run_page = client.get(f"/runs/{pipeline_id}-d").text
        assert '<div id="plan" class="plan markdown">' in run_page
        asked = client.post(f"/pipelines/{pipeline_id}/implement", data={"csrf": csrf})
        assert asked.status_code == 303
        assert asked.headers["location"] == f"/pipelines/{pipeline_id}?asked=implement"
        forged = client.post(f"/pipelines/{pipeline_id}/implement", data={})
        assert forged.status_code == 403
    jobs = queued_dashboard_jobs(dash)
    assert len(jobs) == 1
    assert jobs[0][1]["action"] == "run"
    assert jobs[0][1]["ask"] == {"pipeline": pipeline_id, "prompt": IMPLEMENT_PLAN, "agent": ""}


def test_plan_ready_is_the_state_of_a_successful_discovery_only() -> None:
    pipeline = make_pipeline("o/r", 1)
    pipeline.add(make_run("o.r.1-d").model_copy(update={"mode": "discover"}))
    pipeline.record_finish(RunFinished(run_id="o.r.1-d", outcome=Outcome.SUCCESS, plan="x"))
    assert state_words(summarise(pipeline), "needs_you") == "plan ready"
    pipeline.add(make_run("o.r.1-e").model_copy(update={"mode": "discover"}))
    pipeline.record_finish(RunFinished(run_id="o.r.1-e", outcome=Outcome.FAILURE))
    assert state_words(summarise(pipeline), "needs_you") == "failed"
