"""Slugs, issue branches, pipeline ids, agent/label names and markdown code spans."""

from __future__ import annotations

import random
import re

import pytest

from app.conversation.naming import (
    PIPELINE_ID_RE,
    SLUG_FALLBACK,
    inline_code,
    is_agent_name,
    is_runner_label,
    issue_branch,
    pipeline_id,
    slugify,
)
from runner.contract import is_valid_id
from runner.job import RepoRef, RunRequest, is_valid_branch_name

SLUG_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


@pytest.mark.parametrize(
    ("title", "slug"),
    [
        ("Fix login bug", "fix-login-bug"),
        ("Spelling error in the README file", "spelling-error-in-the-readme-file"),
        ("  Trailing   spaces  ", "trailing-spaces"),
        ("CamelCase AND UPPER", "camelcase-and-upper"),
        ("v2.1.3: crash on start", "v2-1-3-crash-on-start"),
        ("naïve café résumé", "naive-cafe-resume"),
        ("Überprüfung der Größe", "uberprufung-der-grosse"),
        ("Ærø Łódź Þing", "aero-lodz-thing"),
        ("İstanbul ıs nice", "istanbul-is-nice"),
        ("Ｆｕｌｌｗｉｄｔｈ ｔｅｘｔ", "fullwidth-text"),
        ("ﬁle ﬂow", "file-flow"),
        ("修复登录错误", SLUG_FALLBACK),
        ("مرحبا بالعالم", SLUG_FALLBACK),
        ("🔥🔥🔥", SLUG_FALLBACK),
        ("🐛 bug in 🚀 launcher", "bug-in-launcher"),
        ("", SLUG_FALLBACK),
        ("   ", SLUG_FALLBACK),
        ("---", SLUG_FALLBACK),
        ("\x00\n\t\r", SLUG_FALLBACK),
        ("; rm -rf /", "rm-rf"),
        ("$(whoami)", "whoami"),
        ("`id` && echo pwned", "id-echo-pwned"),
        ("../../etc/passwd", "etc-passwd"),
        ("refs/heads/main", "refs-heads-main"),
        ("--force", "force"),
        ("-leading-dash", "leading-dash"),
        ("name.lock", "name-lock"),
        ("a..b", "a-b"),
        ("@{upstream}", "upstream"),
        ("a\u200bb", "ab"),
        ("a\r\nb", "a-b"),
        ("x" * 10_000, "x" * 40),
        (
            "Make the login page remember the user across browser restarts",
            "make-the-login-page-remember-the-user",
        ),
        ("a " * 100, "-".join(["a"] * 20)),
        (
            "abcdefghijklmnopqrstuvwxyz0123456789abcdefghij klm",
            "abcdefghijklmnopqrstuvwxyz0123456789abcd",
        ),
        (
            "short words then averyveryveryverylongwordthatgoeson",
            "short-words-then-averyveryveryverylongwo",
        ),
    ],
)
def test_slugify(title: str, slug: str) -> None:
    assert slugify(title) == slug
    assert SLUG_RE.match(slug)
    assert len(slug) <= 40


@pytest.mark.parametrize(
    ("title", "max_len", "slug"),
    [
        ("Fix login bug", 1, "f"),
        ("Fix login bug", 3, "fix"),
        ("Fix login bug", 4, "fix"),
        ("Fix login bug", 9, "fix-login"),
        ("Fix login bug", 10, "fix-login"),
        ("Fix login bug", 100, "fix-login-bug"),
        ("🔥", 3, "iss"),
        ("ab-cdefgh", 5, "ab"),
        ("a-bcdefgh", 5, "a-bcd"),
    ],
)
def test_slugify_max_len(title: str, max_len: int, slug: str) -> None:
    assert slugify(title, max_len) == slug


@pytest.mark.parametrize("max_len", [0, -1])
def test_slugify_rejects_no_room(max_len: int) -> None:
    with pytest.raises(ValueError, match="max_len"):
        slugify("x", max_len)


@pytest.mark.parametrize("seed", range(20))
def test_slugify_random_titles(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(200):
        title = "".join(chr(rng.randint(0, 0x2FFFF)) for _ in range(rng.randint(0, 80)))
        max_len = rng.randint(1, 60)
        slug = slugify(title, max_len)
        assert SLUG_RE.match(slug), (title, slug)
        assert 1 <= len(slug) <= max_len


@pytest.mark.parametrize(
    ("prefix", "number", "title", "branch"),
    [
        ("trimo/", 42, "Fix login bug", "trimo/42-fix-login-bug"),
        ("trimo/", 1, "🔥", "trimo/1-issue"),
        ("trimo/", 7, "; rm -rf /", "trimo/7-rm-rf"),
        ("trimo/", 8, "../../etc", "trimo/8-etc"),
        ("bots/trimo-", 99999, "Größe", "bots/trimo-99999-grosse"),
        ("t", 3, "x", "t3-x"),
        ("trimo/", 5, "x" * 10_000, "trimo/5-" + "x" * 40),
    ],
)
def test_issue_branch(prefix: str, number: int, title: str, branch: str) -> None:
    assert issue_branch(prefix, number, title) == branch
    assert is_valid_branch_name(branch)


@pytest.mark.parametrize(
    ("prefix", "number"),
    [
        ("trimo/", 0),
        ("trimo/", -3),
        ("-trimo/", 1),
        ("/trimo/", 1),
        ("trimo//", 1),
        ("tri mo/", 1),
        ("trimo..", 1),
        ("trimo/$(id)/", 1),
        ("trimo/\n", 1),
    ],
)
def test_issue_branch_refuses(prefix: str, number: int) -> None:
    with pytest.raises(ValueError):
        issue_branch(prefix, number, "title")


@pytest.mark.parametrize(
    ("repo", "number", "expected"),
    [
        ("octo-org/hello-world", 42, "octo-org.hello-world.42"),
        ("Octo-Org/Hello-World", 42, "octo-org.hello-world.42"),
        ("Codertocat/Hello-World", 1, "codertocat.hello-world.1"),
        ("a/b.c", 7, "a.b.c.7"),
        ("user/repo_with_underscores", 3, "user.repo_with_underscores.3"),
        ("user/.github", 3, "user.github-336e8bc6.3"),  # no "..": see runner.contract.ID_PATTERN
        ("a b/c", 1, None),
        ("../../etc", 1, None),
        ("owner/repo/extra", 1, None),
        ("a.b/c", 1, None),
        ("no-slash", 1, None),
        ("", 1, None),
        ("ünïcödé/répo", 1, None),
        ("🔥/🔥", 1, None),
        ("; rm -rf /", 1, None),
        ("o/" + "r" * 200, 12345, None),
        ("o/" + "r" * 98, 99, None),
        ("o/" + "r" * 95, 99, "o." + "r" * 95 + ".99"),
    ],
)
def test_pipeline_id(repo: str, number: int, expected: str | None) -> None:
    pid = pipeline_id(repo, number)
    if expected is not None:
        assert pid == expected
    else:
        assert re.fullmatch(r"([a-z0-9._-]*-)?[0-9a-f]{8}\.[0-9]+", pid), pid
    assert PIPELINE_ID_RE.fullmatch(pid) and is_valid_id(pid)
    assert pid.endswith(f".{number}")
    assert not pid.startswith((".", "-"))
    assert "/" not in pid
    request = RunRequest(
        run_id=f"{pid[:90]}.r1",
        pipeline=pid,
        repo=RepoRef(full_name=repo, clone_url="/tmp/x"),
        branch="trimo/1-x",
        base_branch="main",
        prompt="p",
    )
    assert request.pipeline == pid


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("a b/c", "a-b/c"),
        ("a b/c", "a_b/c"),
        ("a.b/c", "a/b.c"),
        ("o/" + "r" * 200, "o/" + "r" * 199 + "s"),
        ("o/" + "r" * 200, "o/" + "r" * 201),
        ("x/ü", "x/u"),
        ("x/🔥", "x/🐛"),
    ],
)
def test_pipeline_ids_stay_distinct(first: str, second: str) -> None:
    assert pipeline_id(first, 1) != pipeline_id(second, 1)


def test_pipeline_id_distinct_numbers() -> None:
    assert pipeline_id("o/r", 1) != pipeline_id("o/r", 11)
    assert pipeline_id("o/" + "r" * 300, 1) != pipeline_id("o/" + "r" * 300, 11)


@pytest.mark.parametrize("number", [0, -1, 10**99])
def test_pipeline_id_refuses(number: int) -> None:
    with pytest.raises(ValueError, match="number"):
        pipeline_id("o/r", number)


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("claude", True),
        ("codex", True),
        ("aider", True),
        ("my-agent_2", True),
        ("a", True),
        ("a" * 32, True),
        ("a" * 33, False),
        ("", False),
        ("Claude", False),
        ("9lives", False),
        ("-x", False),
        ("_x", False),
        ("../sh", False),
        ("a b", False),
        ("a\n", False),
        ("cláude", False),
    ],
)
def test_is_agent_name(name: str, ok: bool) -> None:
    assert is_agent_name(name) is ok


@pytest.mark.parametrize(
    ("label", "ok"),
    [
        ("default", True),
        ("gpu", True),
        ("Big.Box-2_x", True),
        ("9", True),
        ("l" * 64, True),
        ("l" * 65, False),
        ("", False),
        (".hidden", False),
        ("-x", False),
        ("../etc", False),
        ("a/b", False),
        ("a b", False),
        ("a:b", False),
        ("x\n", False),
    ],
)
def test_is_runner_label(label: str, ok: bool) -> None:
    assert is_runner_label(label) is ok


@pytest.mark.parametrize(
    ("text", "rendered"),
    [
        ("rnu", "`rnu`"),
        ("@everyone", "`@everyone`"),
        ("a`b", "``a`b``"),
        ("``x", "``` ``x ```"),
        ("x`", "`` x` ``"),
        ("line\nbreak", "`line break`"),
        ("x" * 100, "`" + "x" * 59 + "…`"),
    ],
)
def test_inline_code(text: str, rendered: str) -> None:
    assert inline_code(text) == rendered


def test_inline_code_limit() -> None:
    assert inline_code("abcdef", limit=4) == "`abc…`"
