"""`trimo run --discover`: the plan is printed inert, and the repository is left as it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import git
from tests.test_cli import trimo

pytestmark = pytest.mark.docker


def test_discover_prints_the_plan_and_changes_nothing(
    sample_repo: Path, tmp_path: Path, test_image: str
) -> None:
    cache = tmp_path / "cache"
    first = trimo(
        "run", "--repo", str(sample_repo), "--pipeline", "plan",
        "echo one > one.txt && git add one.txt && git commit -qm One",
        cache=cache,
    )  # fmt: skip
    assert first.returncode == 0, first.stdout + first.stderr
    (sample_repo / "mine.txt").write_text("my own edit\n")
    refs = git(sample_repo, "for-each-ref", "--format=%(refname) %(objectname)")
    status = git(sample_repo, "status", "--porcelain")

    script = (
        "echo vandal > src.txt && git commit -qam Vandal; "
        "printf '## Plan\\n1. [bold]Add[/bold] docs\\033]0;pwned\\007\\n2. Test\\n'"
    )
    ran = trimo(
        "run", "--discover", "--repo", str(sample_repo), "--pipeline", "plan", script,
        cache=cache,
    )  # fmt: skip

    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "started a read-only discovery" in ran.stdout
    assert "Findings and plan" in ran.stdout
    assert "1. [bold]Add[/bold] docs" in ran.stdout and "2. Test" in ran.stdout
    assert "\x1b]0;" not in ran.stdout
    assert 'trimo run --pipeline plan "implement the plan above"' in ran.stdout
    assert git(sample_repo, "for-each-ref", "--format=%(refname) %(objectname)") == refs
    assert git(sample_repo, "status", "--porcelain") == status
    assert git(sample_repo, "show", "trimo/plan:src.txt") == git(
        sample_repo, "show", "main:src.txt"
    )

    follow = trimo(
        "run", "--repo", str(sample_repo), "--pipeline", "plan",
        "cat /trimo/context.md > ctx.md && git add ctx.md && git commit -qm Implement",
        cache=cache,
    )  # fmt: skip
    assert follow.returncode == 0, follow.stdout + follow.stderr
    context = git(sample_repo, "show", "trimo/plan:ctx.md")
    assert "# The plan" in context and "2. Test" in context
    listed = trimo("pipelines", "--repo", str(sample_repo), cache=cache)
    assert listed.returncode == 0, listed.stderr
    assert "success   discovery" in listed.stdout and "3 run(s)" in listed.stdout
