"""Which kept workspace paths a repository ignores at a commit, decided by git from the
commit's own .gitignore files (root and nested, negations included), never the work tree's."""

from __future__ import annotations

from pathlib import Path

from runner.setup.ignored import not_ignored
from tests.conftest import git


def commit(repo: Path, files: dict[str, str]) -> str:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "ignores")
    return git(repo, "rev-parse", "HEAD").strip()


def test_root_and_nested_rules_and_negations_decide(sample_repo: Path) -> None:
    sha = commit(
        sample_repo,
        {".gitignore": "node_modules/\n*.cache\n!kept.cache\n", "web/.gitignore": "dist/\n"},
    )
    paths = ["node_modules", "web/node_modules", "web/dist", "dist", "a.cache", "kept.cache"]
    assert not_ignored(sample_repo, sha, [*paths, "~/.npm"]) == ["dist", "kept.cache"]


def test_the_commit_decides_not_the_work_tree(sample_repo: Path) -> None:
    sha = commit(sample_repo, {".gitignore": "deps/\n"})
    (sample_repo / ".gitignore").write_text("")  # uncommitted: not what the run starts from
    assert not_ignored(sample_repo, sha, ["deps"]) == []
    later = commit(sample_repo, {})
    assert not_ignored(sample_repo, later, ["deps"]) == ["deps"]
    assert not_ignored(sample_repo, "0" * 40, ["deps"]) == ["deps"]
