"""Review-grade diffs in headless Chromium: the diff of a branch pushed to the GitHub
stand-in, a file tree in natural order, numbered lines, unified and split views, viewed
marks kept per person, and a line comment that starts a follow-up with its file, line and
hunk; and the New pipeline form offers the repository's branches."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from app.dashboard.auth import SESSION_COOKIE
from app.github.installations import REPO_INSTALLATIONS
from tests.browser import Browser
from tests.dashboard_helpers import SESSION_SECRET, make_pipeline, make_run, seed_sync, signed_in
from tests.fakegithub import RunningFakeGitHub
from tests.test_dashboard_diffs import OWNER, REPO, git
from tests.test_dashboard_site import queued_dashboard_jobs
from tests.webhook_helpers import RunningApp, make_settings, running_app

pytestmark = [pytest.mark.redis, pytest.mark.slow]
FULL = f"{OWNER}/{REPO}"


@pytest.fixture
def dash(redis_url: str) -> Iterator[tuple[RunningApp, RunningFakeGitHub]]:
    with RunningFakeGitHub() as fake:
        creds = fake.install_app(OWNER)
        fake.create_repo(OWNER, REPO, {"README.md": "# widgets\n", "app.py": "a\nb\nc\n"})
        settings = make_settings(
            redis_url, session_secret=SecretStr(SESSION_SECRET), admins="root",
            github_app_id=creds.app_id, github_private_key=SecretStr(creds.private_key_pem),
            github_api_url=fake.api_url,
        )  # fmt: skip
        with running_app(settings) as running:
            yield running, fake


def push(fake: RunningFakeGitHub, tmp: Path, branch: str) -> None:
    work = tmp / "work"
    git(tmp, "clone", "-q", str(fake.fake.bare_path(OWNER, REPO)), str(work))
    git(work, "checkout", "-q", "-b", branch)
    (work / "app.py").write_text("a\nB\nc\nd\n")
    for name in ("page10.py", "page2.py", "docs/page1.md"):
        (work / name).parent.mkdir(exist_ok=True)
        (work / name).write_text(f"# {name}\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "work")
    git(work, "push", "-q", "origin", branch)


def test_a_diff_reads_like_a_review_and_a_line_comment_starts_a_run(
    dash: tuple[RunningApp, RunningFakeGitHub], redis_url: str, tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:  # fmt: skip
    app, fake = dash
    pipeline = make_pipeline(FULL, 3, "Work")
    pipeline.installation_id = fake.state.installation_for(OWNER).id
    seed_sync(redis_url, pipeline, make_run("octo-org.widgets.3-a"), "finished", commits=1)
    push(fake, tmp_path, pipeline.branch)
    client, _ = signed_in(app.base_url, app.settings, "alice", {FULL: "write"})
    cookie = client.cookies[SESSION_COOKIE]
    client.close()
    window = Browser(app.base_url, None, request.node.name)
    try:
        window.use_session(cookie)
        window.get(f"/pipelines/{pipeline.id}")
        window.element("#diff-tree")
        names = [e.text for e in window.find("#diff-tree a")]
        assert names == ["app.py", "page2.py", "page10.py", "page1.md"], names
        assert [e.get_attribute("data-file") for e in window.find(".diff-file")] == [
            "app.py",
            "page2.py",
            "page10.py",
            "docs/page1.md",
        ]
        rows = window.find(".diff-file[data-file='app.py'] table.unified tr.add")
        assert [r.get_attribute("data-new") for r in rows] == ["2", "4"]
        window.shot("unified")
        assert window.violations() == []  # axe-core: no critical accessibility violation
        window.click(".diff-views button[data-view='split']")
        window.wait(lambda: window.find("table.split")[0].is_displayed(), 10, "the split view")
        assert not window.find("table.unified")[0].is_displayed()
        window.shot("split")
        window.click(".diff-views button[data-view='unified']")

        window.click(".diff-file[data-file='page2.py'] .viewed-mark input")
        window.wait(lambda: window.find(".diff-file[data-file='page2.py'][data-viewed]"), 10,
                    "page2.py marked viewed")  # fmt: skip
        window.get(f"/pipelines/{pipeline.id}")  # kept for this person
        window.wait(lambda: window.find(".diff-file[data-file='page2.py'][data-viewed]"), 20,
                    "the mark after a reload")  # fmt: skip
        assert not window.find(".diff-file[data-file='page2.py'] .diff-body")[0].is_displayed()
        assert window.text("#viewed-count") == "1"

        plus = window.element(".diff-file[data-file='app.py'] tr[data-new='4'] .comment-line")
        window.driver.execute_script("arguments[0].click()", plus)  # shown on hover
        form = window.element("tr.line-comment form")
        form.find_element("name", "prompt").send_keys("Why add d here?")
        window.shot("line-comment")
        form.find_element("css selector", "button:not([type])").click()
        window.wait(lambda: window.path.endswith("?asked=run"), 20, "the follow-up asked")
    finally:
        window.quit()
    jobs = queued_dashboard_jobs(app)
    assert len(jobs) == 1
    ask = jobs[0][1]["ask"]
    assert isinstance(ask, dict)
    assert (ask["prompt"], ask["path"], ask["line"]) == ("Why add d here?", "app.py", "4")
    assert ask["diff_hunk"] == "@@ -1,3 +1,4 @@\n a\n-b\n+B\n c\n+d"


def test_the_new_pipeline_form_offers_the_repositorys_branches(
    dash: tuple[RunningApp, RunningFakeGitHub], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    app, fake = dash
    push(fake, tmp_path, "release/2.0")
    app.redis.hset(REPO_INSTALLATIONS, FULL, str(fake.state.installation_for(OWNER).id))
    client, _ = signed_in(app.base_url, app.settings, "alice", {FULL: "write", "o/r": "read"})
    with client:
        answer = client.get("/branches", params={"repo": FULL.upper()})
        assert answer.json() == {"branches": ["main", "release/2.0"]}
        assert client.get("/branches", params={"repo": "o/r"}).status_code == 404  # read only
        cookie = client.cookies[SESSION_COOKIE]
    window = Browser(app.base_url, None, request.node.name)
    try:
        window.use_session(cookie)
        window.get("/pipelines/new")
        window.wait(lambda: len(window.find("#branches option")) == 2, 20, "the branches")
        values = [e.get_attribute("value") for e in window.find("#branches option")]
        assert values == ["main", "release/2.0"]
    finally:
        window.quit()
