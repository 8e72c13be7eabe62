"""A pipeline's diff on its page: GitHub's compare answer (the stand-in computes it with git),
file by file, escaped, with what GitHub leaves out (a binary file's patch) said so."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from arq.connections import ArqRedis, create_pool
from pydantic import SecretStr

from app.dashboard.diffs import PATCH_LINES, diff_page, load_diff
from app.dashboard.pages import render
from app.dashboard.requests import MAX_HUNK_CHARS, FormError, LineComment, parse_line_comment
from app.github.client import Comparison, GitHubApp
from app.settings import AppSettings
from runner.redisurl import redis_settings
from tests.dashboard_helpers import make_pipeline
from tests.fakegithub import RunningFakeGitHub

OWNER, REPO = "octo-org", "widgets"


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd,
                   check=True, capture_output=True)  # fmt: skip


@pytest.fixture
async def github(redis_url: str) -> AsyncIterator[tuple[RunningFakeGitHub, GitHubApp]]:
    with RunningFakeGitHub() as fake:
        creds = fake.install_app(OWNER)
        fake.create_repo(OWNER, REPO, {"README.md": "# widgets\n", "old.txt": "a\nb\n"})
        settings = AppSettings(
            _env_file=None, github_app_id=creds.app_id, redis_url=redis_url,
            github_private_key=SecretStr(creds.private_key_pem), github_api_url=fake.api_url,
        )  # type: ignore[call-arg]  # fmt: skip
        pool: ArqRedis = await create_pool(redis_settings(redis_url))
        try:
            yield fake, GitHubApp(settings, pool)
        finally:
            await pool.aclose()


def push_branch(fake: RunningFakeGitHub, tmp: Path, branch: str) -> None:
    work = tmp / "work"
    git(tmp, "clone", "-q", str(fake.fake.bare_path(OWNER, REPO)), str(work))
    git(work, "checkout", "-q", "-b", branch)
    (work / "app.py").write_text('print("<script>alert(1)</script>")\n' + "x = 1\n" * 600)
    (work / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary\x00")
    git(work, "mv", "old.txt", "renamed.txt")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "work")
    git(work, "push", "-q", "origin", branch)


async def test_the_diff_of_a_pushed_branch_file_by_file(
    github: tuple[RunningFakeGitHub, GitHubApp], tmp_path: Path
) -> None:
    fake, app = github
    pipeline = make_pipeline(f"{OWNER}/{REPO}", 3, "Work")
    pipeline.installation_id = fake.state.installation_for(OWNER).id
    page = await load_diff(app, pipeline)
    assert page.problem == "The branch has not been pushed yet." and not page.files
    push_branch(fake, tmp_path, pipeline.branch)
    page = await load_diff(app, pipeline)
    assert page.problem == "" and page.commits == 1
    by_name = {f.name: f for f in page.files}
    assert set(by_name) == {"app.py", "logo.png", "renamed.txt"}
    assert by_name["logo.png"].no_patch and by_name["logo.png"].lines == []
    assert by_name["renamed.txt"].old_name == "old.txt"
    code = by_name["app.py"]
    assert code.additions == 601 and code.cut and len(code.lines) == PATCH_LINES
    html = render("_diff.html.j2", diff=page, viewed={}, may_act=True)
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "binary file, or too big" in html and "Only the start is shown." in html


async def test_without_the_apps_key_the_page_says_so() -> None:
    page = await load_diff(None, make_pipeline("o/r", 1))
    assert "not configured" in page.problem


def test_what_github_leaves_out_reads_as_no_patch() -> None:
    answer = Comparison.model_validate(
        {"total_commits": 2, "html_url": "javascript:alert(1)",
         "files": [{"filename": "big.sql", "status": "modified", "additions": 9000,
                    "deletions": 1, "patch": None}, {"filename": "\x1b[31mred"}]}
    )  # fmt: skip
    page = diff_page(answer)
    assert page.url == ""  # only http(s) links are shown
    assert page.files[0].no_patch and page.files[0].additions == 9000
    assert page.files[1].name == "red"  # the whole escape sequence dropped


def test_files_sort_as_people_count_and_lines_are_numbered_on_both_sides() -> None:
    patch = "@@ -1,3 +1,4 @@\n a\n-b\n+B\n+C\n c\n\\ No newline at end of file"
    answer = Comparison.model_validate(
        {"total_commits": 1, "files": [
            {"filename": name, "status": "modified", "additions": 2, "deletions": 1,
             "patch": patch}
            for name in ("page10.py", "src/z.py", "page2.py", "Page1.py")
        ]}
    )  # fmt: skip
    page = diff_page(answer)
    assert [f.name for f in page.files] == ["Page1.py", "page2.py", "page10.py", "src/z.py"]
    assert [(folder, len(files)) for folder, files in page.tree()] == [("", 3), ("src", 1)]
    lines = page.files[0].lines
    assert [(x.kind, x.old, x.new, x.text) for x in lines] == [
        ("hunk", None, None, "@@ -1,3 +1,4 @@"),
        ("ctx", 1, 1, "a"), ("del", 2, None, "b"), ("add", None, 2, "B"),
        ("add", None, 3, "C"), ("ctx", 3, 4, "c"),
        ("hunk", None, None, "\\ No newline at end of file"),
    ]  # fmt: skip
    pairs = [(r.left.text if r.left else None, r.right.text if r.right else None)
             for r in page.files[0].rows]  # fmt: skip
    assert pairs[2:4] == [("b", "B"), (None, "C")]
    assert page.files[0].digest != page.files[3].digest  # the name is part of the change
    html = render("_diff.html.j2", diff=page, viewed={"page2.py": page.files[1].digest},
                  may_act=False)  # fmt: skip
    assert html.count("data-viewed") == 1 and "comment-line" not in html
    assert '<td class="ln">2</td><td class="ln"></td>' in html  # a deleted line's number


@pytest.mark.parametrize(
    ("form", "answer"),
    [
        ({"prompt": "Why?", "path": "a.py", "line": "3", "diff_hunk": "@@\r\n+x"},
         LineComment("Why?", "a.py", 3, "@@\n+x")),
        ({"prompt": " ", "path": "a.py", "line": "3"}, "Write a prompt"),
        ({"prompt": "Why?", "path": "", "line": "3"}, "needs the file"),
        ({"prompt": "Why?", "path": "a\nb", "line": "3"}, "needs the file"),
        ({"prompt": "Why?", "path": "a.py", "line": "0"}, "needs the line"),
        ({"prompt": "Why?", "path": "a.py", "line": "-1"}, "needs the line"),
        ({"prompt": "Why?", "path": "a.py", "line": "x" * 50}, "needs the line"),
    ],
)  # fmt: skip
def test_line_comment_forms(form: dict[str, str], answer: LineComment | str) -> None:
    parsed = parse_line_comment(form)
    if isinstance(answer, LineComment):
        assert parsed == answer
    else:
        assert isinstance(parsed, FormError) and answer in parsed.message


def test_a_huge_hunk_keeps_its_end() -> None:
    hunk = "@@ -1 +1 @@\n" + "+x\n" * 20_000 + "+the commented line"
    parsed = parse_line_comment({"prompt": "Why?", "path": "a.py", "line": "9", "diff_hunk": hunk})
    assert isinstance(parsed, LineComment) and parsed.diff_hunk.endswith("+the commented line")
    assert len(parsed.diff_hunk) == MAX_HUNK_CHARS
