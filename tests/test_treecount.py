"""Counting changed files from the trees agrees with git, and stops at its budget."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from runner import gitops
from runner.treecount import Budget, Count, count_changed
from tests.conftest import git

GIT = ["git", *gitops.SAFE_OPTIONS]


def count(repo: Path, base: str, head: str, budget: Budget | None = None) -> Count:
    return count_changed(
        repo, base, head, GIT, gitops.git_env(), gitops.SUMMARY, budget or Budget()
    )


def commit_all(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def git_count(repo: Path, base: str, head: str) -> int:
    return len(git(repo, "diff", "--no-renames", "--name-only", base, head).splitlines())


def mktree(repo: Path, lines: list[str]) -> str:
    return subprocess.run(
        ["git", "mktree"], cwd=repo, input="".join(lines), text=True,
        capture_output=True, check=True,
    ).stdout.strip()  # fmt: skip


@pytest.fixture
def repo(sample_repo: Path) -> Path:
    (sample_repo / "dir" / "sub").mkdir(parents=True)
    for name in ("a", "b", "dir/c", "dir/sub/d", "dir/sub/e", "gone/f", "gone/g"):
        (sample_repo / name).parent.mkdir(parents=True, exist_ok=True)
        (sample_repo / name).write_text(f"{name}\n")
    (sample_repo / "tool").write_text("#!/bin/sh\n")
    commit_all(sample_repo, "files")
    return sample_repo


def test_agrees_with_git_diff(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    (repo / "a").write_text("changed\n")  # modified
    (repo / "dir" / "sub" / "d").unlink()  # removed deep down
    (repo / "new" / "deeper").mkdir(parents=True)
    (repo / "new" / "deeper" / "x").write_text("x\n")  # added in new directories
    (repo / "tool").chmod(0o755)  # mode only
    subprocess.run(["rm", "-r", str(repo / "gone")], check=True)  # a directory removed
    (repo / "b").unlink()
    (repo / "b").mkdir()
    (repo / "b" / "inside").write_text("was a file\n")  # a file became a directory
    (repo / "link").symlink_to("a")
    (repo / "README.md").rename(repo / "READ.md")  # a rename: removed and added
    head = commit_all(repo, "changes")
    assert count(repo, base, head) == Count(git_count(repo, base, head), complete=True)
    assert count(repo, head, base) == Count(git_count(repo, head, base), complete=True)
    assert count(repo, head, head) == Count(0, complete=True)


def test_a_repeated_subtree_is_read_once(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    blob = git(repo, "hash-object", "-w", "--stdin")
    tree = mktree(repo, [f"100644 blob {blob}\tf{i}\n" for i in range(10)])
    for _ in range(8):
        tree = mktree(repo, [f"040000 tree {tree}\td{i}\n" for i in range(10)])
    top = git(repo, "ls-tree", "HEAD").splitlines()
    root = mktree(repo, [f"{line}\n" for line in top] + [f"040000 tree {tree}\tbomb\n"])
    head = git(repo, "commit-tree", root, "-p", base, "-m", "bomb")
    assert count(repo, base, head, Budget(trees=30)) == Count(10**9, complete=True)


def test_stops_at_its_budget_with_a_lower_bound(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    for i in range(30):
        (repo / f"d{i}").mkdir()
        (repo / f"d{i}" / "f").write_text(f"{i}\n")
    head = commit_all(repo, "thirty directories")
    found = count(repo, base, head, Budget(trees=12))
    assert not found.complete and 0 < found.files < 30
    assert not count(repo, base, head, Budget(tree_bytes=100)).complete
    assert not count(repo, base, head, Budget(seconds=-1)).complete
    assert count(repo, base, head) == Count(30, complete=True)


def test_deep_trees_stop_at_the_depth_budget(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    blob = git(repo, "hash-object", "-w", "--stdin")
    tree = mktree(repo, [f"100644 blob {blob}\tf\n"])
    for _ in range(300):
        tree = mktree(repo, [f"040000 tree {tree}\td\n"])
    head = git(repo, "commit-tree", tree, "-p", base, "-m", "deep")
    assert count(repo, base, head, Budget(depth=500)).complete
    deep = count(repo, base, head)
    assert not deep.complete


def test_unknown_commits_count_as_incomplete(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    assert count(repo, base, "0" * 40) == Count(0, complete=False)
