"""Git on the runner's own repositories: the bare mirrors, and new workspaces.

The host runs git only where nothing but Trimo has written: a repository's
mirror, and a workspace in the moment it is made, before any agent sees it.
Once an agent has run, its workspace is touched by git only inside a sandbox
(`sandbox/bin/trimo-sync` and `trimo-export`), and its work reaches the mirror
as a verified bundle (`runner.handoff`). Credentials reach git only through
environment variables, never a URL or an argument. Git's own error text can
quote files, so it goes to the runner's log, never into a `GitError`'s message.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from runner import bounded, treecount
from runner.diffsummary import DiffSummary, FileChange, summarize_diff
from runner.errors import GitError, PushRefused
from runner.job import CommitInfo
from runner.printable import printable

log = logging.getLogger(__name__)

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

MAX_COMMITS_LISTED = 500
MAX_FILES_LISTED = 1000
"""A summary lists the files of a diff of at most this many files; a larger one is counted."""
MAX_DIFF_BYTES = 4 * 1024 * 1024
DIFF_BIG_FILE = "1m"
"""Files over this size count as binary in summaries, so their text is never read."""
RENAME_LIMIT = 1000
"""git's own default, said here: past this many files on each side, renames are found only
when the contents are identical."""

_GLOBAL_CONFIG = """\
[safe]
\tdirectory = *
[core]
\thooksPath = /dev/null
\tfsmonitor = false
[protocol "ext"]
\tallow = never
"""

WORKSPACE_CONFIG = """\
[core]
\trepositoryformatversion = 0
\tfilemode = true
\tbare = false
\tlogallrefupdates = true
[gc]
\tauto = 0
"""
"""A new workspace's config: no remote, so nothing in it names a host path."""

SHA_RE = re.compile(r"^[0-9a-f]{40}$")
FETCHED_SUFFIX = ".fetched"
"""Beside `<key>.git`: when (ns) its last fetch that went through began."""
UNTRUSTED = bounded.Bounds(cpu_seconds=120, memory_bytes=1024 * bounded.MB, wall_seconds=300)
"""For git on what an agent made: a small bundle can inflate to a great deal."""
PUSH = bounded.Bounds(cpu_seconds=120, memory_bytes=1024 * bounded.MB, wall_seconds=600)
"""A push sends the agent's objects, over a network that may be slow."""
SUMMARY = bounded.Bounds(cpu_seconds=60, memory_bytes=512 * bounded.MB, wall_seconds=60)
"""Counting and diffing a run's changes, for its summary."""
BOUNDED_OPTIONS = (
    "-c", "core.packedGitWindowSize=32m",
    "-c", "core.packedGitLimit=256m",
    "-c", "core.deltaBaseCacheLimit=32m",
    "-c", "pack.threads=2",
)  # fmt: skip
"""Git's pack windows and caches sized to fit its address-space limit."""


@cache
def global_config() -> str:
    """Trimo's own global git config. Unlike `-c`, it also reaches the upload-pack that git
    starts when fetching locally (git clears GIT_CONFIG_PARAMETERS for it)."""
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


def git_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    return {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": global_config(),
        "LC_ALL": "C",
        **(env or {}),
    }


def log_excerpt(text: str) -> str:
    """A bounded, printable excerpt of git's own words, for the runner's log only."""
    return printable(text.strip()[-800:], one_line=True)


def git(
    cwd: Path | None,
    *args: str,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    what: str = "",
    bounds: bounded.Bounds | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run git with Trimo's safety options. On failure, raise a GitError saying `what` failed;
    git's own text goes to the log. Work on what an agent made runs within `bounds`."""
    if bounds is not None:
        proc = bounded.run(
            ["git", *SAFE_OPTIONS, *BOUNDED_OPTIONS, *args], bounds, cwd=cwd, env=git_env(env)
        )
    else:
        proc = subprocess.run(
            ["git", *SAFE_OPTIONS, *args],
            cwd=cwd,
            env=git_env(env),
            capture_output=True,
            encoding="utf-8",
            errors="replace",
            timeout=600,
        )
    if check and proc.returncode != 0:
        detail = log_excerpt(proc.stderr)
        log.warning("git %s failed (exit %d): %s", args[0], proc.returncode, detail)
        raise GitError(what or f"a git step ({args[0]}) failed on the runner", detail=detail)
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


@contextmanager
def locked_now(path: Path) -> Iterator[bool]:
    """`locked` without waiting: whether the lock was taken (held until the block ends)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_mirror(mirrors_dir: Path, clone_url: str, token: str | None = None) -> Path:
    """A bare mirror of the repository's branches, created or brought up to date: fetched
    now, unless a fetch that began after this call did so while it waited for the mirror's
    lock (runs of one repository starting together share a fetch, not queue for one each)."""
    key = repo_key(clone_url)
    mirror = mirrors_dir / f"{key}.git"
    began = mirrors_dir / f"{key}{FETCHED_SUFFIX}"
    asked = time.time_ns()
    env = auth_env(token)
    with locked(mirrors_dir / f"{key}.lock"):
        fresh = not (mirror / "HEAD").exists()
        if not fresh and _time_in(began) > asked:
            return mirror
        fetching = time.time_ns()
        target = mirror.with_suffix(".tmp") if fresh else mirror
        if fresh:
            shutil.rmtree(target, ignore_errors=True)
            git(None, "init", "--quiet", "--bare", str(target))
            git(target, "remote", "add", "origin", clone_url)
            git(target, "config", "remote.origin.fetch", "+refs/heads/*:refs/heads/*")
            git(target, "config", "gc.auto", "0")
        fetch = ("fetch", "--quiet", "--prune", "--no-tags", "origin")
        git(target, *fetch, env=env, what="could not fetch the repository from its remote")
        if fresh:
            target.rename(mirror)
        began.write_text(str(fetching))
    return mirror


def _time_in(path: Path) -> int:
    """The time (ns) written in `path`; 0 when there is none."""
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return 0


def branch_sha(repo: Path, branch: str) -> str | None:
    return resolve(repo, f"refs/heads/{branch}")


def resolve(repo: Path, rev: str) -> str | None:
    """The commit `rev` names in `repo`, or None."""
    proc = git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
    sha = proc.stdout.strip()
    return sha if SHA_RE.match(sha) else None


def create_workspace(
    path: Path, mirror: Path, branches: list[str], owner: int | None, also: tuple[str, ...] = ()
) -> None:
    """A new workspace holding `branches` of the mirror as `origin/<branch>`, and the
    commits of the mirror's refs `also` (kept commits) with no ref of their own.

    Made by the host before any agent sees it; no remote is configured and no
    other branch is copied. The agent's container checks out the run's start.
    """
    tmp = path.with_name(path.name + ".new")
    remove_tree(tmp)
    path.parent.mkdir(parents=True, exist_ok=True)
    git(None, "init", "--quiet", str(tmp))
    (tmp / ".git" / "config").write_text(WORKSPACE_CONFIG)
    shutil.rmtree(tmp / ".git" / "hooks", ignore_errors=True)
    refspecs = [f"+refs/heads/{b}:refs/remotes/origin/{b}" for b in branches]
    carried = [f"refs/trimo/carried/{n}" for n in range(len(also))]
    git(
        tmp,
        "fetch",
        "--quiet",
        "--no-tags",
        str(mirror),
        *refspecs,
        *[f"+{ref}:{into}" for ref, into in zip(also, carried, strict=True)],
        what="could not copy the repository into a new workspace",
    )
    for into in carried:
        git(tmp, "update-ref", "-d", into)
    if owner is not None:
        chown_tree(tmp, owner)
    tmp.rename(path)


def chown_tree(root: Path, uid: int) -> None:
    """Give a tree the host made to `uid`, never following links."""
    os.lchown(root, uid, uid)
    for parent, dirs, files in os.walk(root):
        for name in dirs + files:
            os.lchown(os.path.join(parent, name), uid, uid)


def remove_tree(path: Path) -> None:
    """Delete a tree an agent may have written, never following a link in it.

    coreutils' `rm` walks any depth without recursion (Python's rmtree recurses, and a
    tree of a few thousand nested directories exhausts it) and stays on this filesystem."""
    if not path.is_symlink() and not path.exists():
        return
    proc = subprocess.run(
        ["rm", "-rf", "--one-file-system", "--", str(path)], capture_output=True, text=True
    )
    if proc.returncode != 0 or path.is_symlink() or path.exists():
        log.warning("could not delete %s: %s", path, log_excerpt(proc.stderr))
        raise GitError(f"could not delete {path.name}", "see the runner's log")


def write_sync_bundle(mirror: Path, dest: Path, branches: list[str], known: list[str]) -> bool:
    """A bundle of `branches` minus the commits the workspace is known to have;
    False when there is nothing it lacks."""
    have = [sha for sha in known if resolve(mirror, sha)]
    refs = [f"refs/heads/{b}" for b in branches if branch_sha(mirror, b)]
    proc = git(
        mirror,
        "bundle", "create", str(dest), *refs, *[f"^{sha}" for sha in have],
        check=False,
        bounds=UNTRUSTED,
    )  # fmt: skip
    if proc.returncode == 0:
        dest.chmod(0o644)
        return True
    dest.unlink(missing_ok=True)
    if "empty bundle" in proc.stderr:
        return False
    log.warning("git bundle create failed: %s", log_excerpt(proc.stderr))
    raise GitError("could not prepare the workspace's update")


def is_ancestor(repo: Path, older: str, newer: str) -> bool:
    proc = git(repo, "merge-base", "--is-ancestor", older, newer, check=False, bounds=UNTRUSTED)
    return proc.returncode == 0


NOT_FAST_FORWARD = "the branch moved on the remote (not a fast-forward)"
_REJECTION = re.compile(r"^\s*!.*?\[(?:remote )?rejected\].*?\((?P<why>.+)\)\s*$", re.M)
_REMOTE_ERROR = re.compile(r"^remote: (?:error: )?(?P<why>GH\d{3}: .+?)\s*$", re.M)


def push(mirror: Path, remote_url: str, sha: str, ref: str, token: str | None) -> None:
    """Push `sha` to `ref` without force: the remote refuses anything but a fast-forward.

    A refusal by the remote (rules, push protection, large files, workflow files
    without permission) raises PushRefused with the remote's reason in one line."""
    proc = git(
        mirror,
        "push", "--quiet", "--no-verify", "--porcelain", remote_url, f"{sha}:{ref}",
        env=auth_env(token),
        check=False,
        bounds=PUSH,
    )  # fmt: skip
    if proc.returncode == 0:
        return
    text = proc.stderr + "\n" + proc.stdout
    detail = log_excerpt(text)
    log.warning("git push to %s failed: %s", ref, detail)
    reason = refusal_reason(text)
    if reason is None:
        raise GitError("could not push to the repository", detail=detail)
    raise PushRefused("the repository refused the push", reason=reason, detail=detail)


def refusal_reason(text: str) -> str | None:
    """The remote's own first line of why it refused a push, or None when it did not say."""
    if "non-fast-forward" in text or "fetch first" in text:
        return NOT_FAST_FORWARD
    for pattern in (_REMOTE_ERROR, _REJECTION):
        if match := pattern.search(text):
            return printable(match.group("why"), limit=300, one_line=True)
    return None


def commits_between(repo: Path, base: str, head: str) -> list[CommitInfo]:
    """The commits from `base` to `head`, oldest first; at most the newest MAX_COMMITS_LISTED."""
    out = git(
        repo,
        # The subject cut (and padded) by git itself: a message can be as large as a bundle.
        "log", f"--max-count={MAX_COMMITS_LISTED}", "--format=%H%x00%<(200,trunc)%s",
        f"{base}..{head}",
        what="could not list the run's commits",
        bounds=UNTRUSTED,
    ).stdout  # fmt: skip
    commits = [
        CommitInfo(sha=sha, subject=printable(subject.rstrip(" "), limit=200, one_line=True))
        for sha, subject in (ln.split("\0", 1) for ln in out.splitlines() if "\0" in ln)
    ]
    return commits[::-1]


def count_commits(repo: Path, base: str, head: str) -> int:
    out = git(
        repo, "rev-list", "--count", f"{base}..{head}", check=False, bounds=UNTRUSTED
    ).stdout.strip()
    return int(out) if out.isdigit() else 0


def first_lines(repo: Path, args: list[str], count: int, bounds: bounded.Bounds) -> list[str]:
    """The first `count` lines git prints for `args`, read as a stream; none if it fails."""
    with bounded.popen(
        ["git", *SAFE_OPTIONS, *BOUNDED_OPTIONS, *args], bounds, cwd=repo, env=git_env(),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    ) as proc:  # fmt: skip
        assert proc.stdout is not None
        lines = [proc.stdout.readline(4096) for _ in range(count)]
    return [ln.decode("utf-8", errors="replace").rstrip("\n") for ln in lines if ln]


def summarize(repo: Path, base: str, head: str, max_bytes: int = MAX_DIFF_BYTES) -> DiffSummary:
    """The diff summary of `base..head`. Its files are first counted from the trees; a diff
    of more than MAX_FILES_LISTED files is only counted, a smaller one is read from
    `git diff -M` as a stream, cut at `max_bytes`, within SUMMARY's bounds."""
    git_command = ["git", *SAFE_OPTIONS, *BOUNDED_OPTIONS]
    count = treecount.count_changed(repo, base, head, git_command, git_env(), SUMMARY)
    if not count.complete or count.files > MAX_FILES_LISTED:
        return DiffSummary(unlisted=count.files, at_least=not count.complete)
    if count.files == 0:
        return DiffSummary()
    args = [
        *git_command,
        "-c", f"core.bigFileThreshold={DIFF_BIG_FILE}", "-c", f"diff.renameLimit={RENAME_LIMIT}",
        "diff", "-M", "--no-color", "--no-ext-diff", "--no-textconv", base, head,
    ]  # fmt: skip
    with bounded.popen(
        args, SUMMARY, cwd=repo, env=git_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    ) as proc:
        assert proc.stdout is not None
        data = proc.stdout.read(max_bytes + 1)
        cut = len(data) > max_bytes
        failed = not cut and proc.wait() != 0
    if failed:  # past its bounds: the count is all there is
        log.warning("git diff for the summary failed (exit %s)", proc.returncode)
        return DiffSummary(unlisted=count.files)
    if cut:
        data = data[: data.rfind(b"\ndiff --git ", 0, max_bytes) + 1]
    summary = summarize_diff(data.decode("utf-8", errors="replace"))
    summary = summary.model_copy(update={"files": [_printable_names(f) for f in summary.files]})
    if cut:
        limit = f"{max_bytes // (1024 * 1024)} MB"
        note = f"the diff is larger than {limit}; only the files before that point are listed"
        unlisted = max(0, count.files - len(summary.files))
        return summary.model_copy(update={"truncated": note, "unlisted": unlisted})
    return summary


def _printable_names(change: FileChange) -> FileChange:
    """File names are the agent's: no control characters reach a terminal or a comment."""
    old = printable(change.old_path, limit=300, one_line=True) if change.old_path else None
    return change.model_copy(
        update={"path": printable(change.path, limit=300, one_line=True), "old_path": old}
    )
