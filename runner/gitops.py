"""Git for the runner: bare mirrors, pipeline workspaces, saving and publishing work.

The workspace is written by the agent, so its `.git` is untrusted: before the
host runs git in it, its config is rewritten and its hooks removed, and every
host command disables hooks and fsmonitor. Credentials reach git only through
environment variables, never a URL or an argument.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from runner.errors import GitError
from runner.job import CommitInfo

SAFE_OPTIONS = (
    "-c", "core.hooksPath=/dev/null",
    "-c", "core.fsmonitor=false",
    "-c", "safe.directory=*",
    "-c", "protocol.ext.allow=never",
    "-c", "credential.helper=",
    "-c", "user.name=Trimo",
    "-c", "user.email=trimo@localhost",
    "-c", "commit.gpgsign=false",
)  # fmt: skip


_GLOBAL_CONFIG = """\
[safe]
\tdirectory = *
[core]
\thooksPath = /dev/null
\tfsmonitor = false
[protocol "ext"]
\tallow = never
"""


@cache
def global_config() -> str:
    """Trimo's own global git config. Unlike `-c`, it also reaches the upload-pack that git
    starts when fetching from a workspace (git clears GIT_CONFIG_PARAMETERS for it)."""
    path = Path(tempfile.gettempdir()) / f"trimo-gitconfig-{os.getuid()}"
    if not path.exists() or path.read_text() != _GLOBAL_CONFIG:
        tmp = path.with_suffix(f".{os.getpid()}")
        tmp.write_text(_GLOBAL_CONFIG)
        tmp.replace(path)
    return str(path)


def auth_env(token: str | None) -> dict[str, str]:
    """Environment that makes git send `token` as GitHub expects, without it on a command line."""
    if not token:
        return {}
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "http.extraHeader",
        "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
    }


def git(
    cwd: Path | None,
    *args: str,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """Run git with Trimo's safety options; raise GitError with git's own words on failure."""
    full_env = {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": global_config(),
        "LC_ALL": "C",
        **(env or {}),
    }
    proc = subprocess.run(
        ["git", *SAFE_OPTIONS, *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise GitError(f"git {args[0]} failed: {proc.stderr.strip()[-800:]}")
    return proc


def repo_key(clone_url: str) -> str:
    """A short, stable directory name for a repository."""
    return hashlib.sha256(clone_url.encode()).hexdigest()[:16]


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (runs of one repository share its mirror)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_mirror(mirrors_dir: Path, clone_url: str, token: str | None = None) -> Path:
    """A bare mirror of the repository's branches, created or brought up to date."""
    mirror = mirrors_dir / f"{repo_key(clone_url)}.git"
    env = auth_env(token)
    with locked(mirrors_dir / f"{repo_key(clone_url)}.lock"):
        if not (mirror / "HEAD").exists():
            tmp = mirror.with_suffix(".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            git(None, "init", "--quiet", "--bare", str(tmp))
            git(tmp, "remote", "add", "origin", clone_url)
            git(tmp, "config", "remote.origin.fetch", "+refs/heads/*:refs/heads/*")
            git(tmp, "config", "gc.auto", "0")
            git(tmp, "fetch", "--quiet", "--prune", "--no-tags", "origin", env=env)
            tmp.rename(mirror)
        else:
            git(mirror, "fetch", "--quiet", "--prune", "--no-tags", "origin", env=env)
    return mirror


def branch_sha(repo: Path, branch: str) -> str | None:
    proc = git(
        repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}", check=False
    )
    return proc.stdout.strip() or None


_WORKSPACE_CONFIG = """\
[core]
\trepositoryformatversion = 0
\tfilemode = true
\tbare = false
\tlogallrefupdates = true
\ttrustctime = false
\tcheckStat = minimal
[remote "origin"]
\turl = {mirror}
\tfetch = +refs/heads/*:refs/remotes/origin/*
[gc]
\tauto = 0
"""


def sanitize(workspace: Path, mirror: Path) -> None:
    """Undo what an agent could have planted in `.git` to run code on the host."""
    gitdir = workspace / ".git"
    if not gitdir.is_dir():
        raise GitError(f"{workspace} is not a self-contained git workspace")
    (gitdir / "config").write_text(_WORKSPACE_CONFIG.format(mirror=mirror))
    shutil.rmtree(gitdir / "hooks", ignore_errors=True)
    for planted in ("info/attributes", "objects/info/alternates", "commondir"):
        (gitdir / planted).unlink(missing_ok=True)


@dataclass(frozen=True)
class Workspace:
    path: Path
    branch: str
    base_sha: str
    """Where this run starts: the pipeline branch's published head, or the base branch's."""
    published_sha: str | None
    """The pipeline branch's head on the remote before the run (None on a first run)."""


def prepare_workspace(workspace: Path, mirror: Path, branch: str, base_branch: str) -> Workspace:
    """Check out the pipeline branch (created from the base branch on first use)."""
    published = branch_sha(mirror, branch)
    start = published or branch_sha(mirror, base_branch)
    if start is None:
        raise GitError(f"the base branch {base_branch!r} does not exist in the repository")
    if not (workspace / ".git").is_dir():
        shutil.rmtree(workspace, ignore_errors=True)
        workspace.parent.mkdir(parents=True, exist_ok=True)
        git(
            None, "clone", "--quiet", "--no-hardlinks", "--no-checkout", str(mirror), str(workspace)
        )
    sanitize(workspace, mirror)
    refspecs = [f"+refs/heads/{base_branch}:refs/remotes/origin/{base_branch}"]
    if published:
        refspecs.append(f"+refs/heads/{branch}:refs/remotes/origin/{branch}")
    git(workspace, "fetch", "--quiet", "--no-tags", "origin", *refspecs)
    for leftover in ("rebase-merge", "rebase-apply"):
        shutil.rmtree(workspace / ".git" / leftover, ignore_errors=True)
    for leftover in ("MERGE_HEAD", "CHERRY_PICK_HEAD", "REVERT_HEAD", "index.lock"):
        (workspace / ".git" / leftover).unlink(missing_ok=True)
    git(workspace, "checkout", "--quiet", "--force", "-B", branch, start)
    git(workspace, "clean", "--quiet", "-fd")
    return Workspace(workspace, branch, start, published)


def head_sha(workspace: Path) -> str | None:
    proc = git(workspace, "rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False)
    return proc.stdout.strip() or None


def has_changes(workspace: Path) -> bool:
    proc = git(workspace, "status", "--porcelain", "--untracked-files=all")
    return bool(proc.stdout.strip())


def commit_leftovers(workspace: Path, message: str) -> str | None:
    """Commit whatever the agent left uncommitted; returns the new commit, or None."""
    if not has_changes(workspace):
        return None
    git(workspace, "add", "--all")
    git(workspace, "commit", "--quiet", "--no-verify", "-m", message)
    return head_sha(workspace)


def is_ancestor(workspace: Path, older: str, newer: str) -> bool:
    return git(workspace, "merge-base", "--is-ancestor", older, newer, check=False).returncode == 0


def push(workspace: Path, remote_url: str, sha: str, ref: str, token: str | None) -> None:
    """Push `sha` to `ref` without force: the remote refuses anything but a fast-forward."""
    git(
        workspace, "push", "--quiet", "--no-verify", remote_url, f"{sha}:{ref}", env=auth_env(token)
    )


def commits_between(workspace: Path, base: str, head: str) -> list[CommitInfo]:
    out = git(workspace, "log", "--reverse", "--format=%H%x00%s", f"{base}..{head}").stdout
    return [
        CommitInfo(sha=s, subject=subj)
        for s, subj in (ln.split("\0", 1) for ln in out.splitlines())
    ]


def diff_text(workspace: Path, base: str, head: str) -> str:
    return git(workspace, "diff", "-M", "--no-color", "--no-ext-diff", base, head).stdout


def fetch_head_into(mirror: Path, workspace: Path, run_id: str) -> str | None:
    """Copy the workspace's HEAD into the (trusted) mirror; returns its sha.

    Fetching from the workspace only runs upload-pack there, which ignores the
    hooks an agent could plant; pushes then go from the mirror, whose config is ours.
    """
    if gitops_head := head_sha(workspace):
        ref = f"refs/trimo/runs/{run_id}"
        git(mirror, "fetch", "--quiet", "--no-tags", str(workspace), f"+{gitops_head}:{ref}")
        return gitops_head
    return None


def hand_over(workspace: Path, uid: int) -> None:
    """Give the workspace to the agent's uid (the runner as root reads it with safe.directory).

    The workspace config ignores ctime and owners, so this does not make git rehash files.
    """
    owner = f"{uid}:{uid}"
    not_theirs = ["(", "!", "-uid", str(uid), "-o", "!", "-gid", str(uid), ")"]
    # Only what is not theirs yet (new objects, files git checked out), never following links.
    subprocess.run(
        ["find", str(workspace), *not_theirs, "-exec", "chown", "-h", owner, "{}", "+"],
        check=True,
    )
