"""The stand-in's git side: bare repositories served over smart HTTP by `git http-backend`.

Clients authenticate as GitHub Apps do: HTTP Basic, user `x-access-token`, password an
installation token the API issued. A pre-receive hook (prereceive.py) refuses what GitHub
refuses, with GitHub's words: pushes to protected branches (GH006), workflow files without
the `workflows` permission, files over 100 MB (GH001), secrets under push protection and
unsigned commits under a ruleset (GH013). The repository's `Repo` fields set the rules.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from tests.fakegithub.state import FakeState, RecordedRequest

GIT_USER = "x-access-token"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
REF_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/-]{0,254}$")

PRE_RECEIVE = Path(__file__).with_name("prereceive.py")
HOOK_DECLINED = b" pre-receive hook declined"
UNAVAILABLE = "We're having trouble with git right now. Please try again later.\n"


def _env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="Fake GitHub",
        GIT_AUTHOR_EMAIL="noreply@fake.github.invalid",
        GIT_COMMITTER_NAME="Fake GitHub",
        GIT_COMMITTER_EMAIL="noreply@fake.github.invalid",
        GIT_TERMINAL_PROMPT="0",
    )
    env.update(extra or {})
    return env


def run_git(
    git_dir: Path, *args: str, input: bytes | None = None, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    """Run git on the repository `git_dir` (bare or not)."""
    return subprocess.run(
        ["git", *args],
        cwd=git_dir,
        env=_env(),
        input=input,
        capture_output=True,
        check=check,
        timeout=60,
    )


def repo_path(root: Path, owner: str, name: str) -> Path:
    """Where the bare repository owner/name lives under `root`."""
    if not (NAME_RE.match(owner) and NAME_RE.match(name)) or name.endswith(".git"):
        raise ValueError(f"bad repository name {owner}/{name}")
    return root / owner / f"{name}.git"


def _write_files(work: Path, files: Mapping[str, str | bytes]) -> None:
    for rel, content in files.items():
        parts = PurePosixPath(rel).parts
        if not parts or PurePosixPath(rel).is_absolute() or ".." in parts or ".git" in parts:
            raise ValueError(f"bad file path {rel!r}")
        target = work.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)


def install_protection(bare: Path, branches: Iterable[str]) -> None:
    """(Re)write the pre-receive hook so that pushes to `branches` are refused."""
    names = list(branches)
    for name in names:
        if not REF_RE.match(name):
            raise ValueError(f"bad branch name {name!r}")
    (bare / "fakegithub-protected").write_text("".join(f"refs/heads/{n}\n" for n in names))
    hook = bare / "hooks" / "pre-receive"
    hook.write_text(f"#!{sys.executable}\n" + PRE_RECEIVE.read_text())
    hook.chmod(0o755)


def create_bare_repo(
    root: Path,
    owner: str,
    name: str,
    files: Mapping[str, str | bytes],
    default_branch: str = "main",
    protected: Iterable[str] | None = None,
) -> Path:
    """A bare repository with one commit on `default_branch` holding `files`."""
    bare = repo_path(root, owner, name)
    if bare.exists():
        raise FileExistsError(bare)
    if not REF_RE.match(default_branch):
        raise ValueError(f"bad branch name {default_branch!r}")
    bare.parent.mkdir(parents=True, exist_ok=True)
    run_git(bare.parent, "init", "-q", "--bare", "-b", default_branch, bare.name)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        run_git(work, "init", "-q", "-b", default_branch)
        _write_files(work, files)
        run_git(work, "add", "-A")
        run_git(work, "commit", "-q", "--allow-empty", "-m", "Initial commit")
        run_git(work, "push", "-q", str(bare), f"HEAD:refs/heads/{default_branch}")
    run_git(bare, "config", "http.receivepack", "true")
    install_protection(bare, [default_branch] if protected is None else protected)
    return bare


# --- reading repositories (used by the REST side) ---------------------------------------


def resolve(bare: Path, rev: str) -> str | None:
    """The commit `rev` (branch, tag or sha) names, or None."""
    if not REF_RE.match(rev):
        return None
    done = run_git(bare, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
    return done.stdout.decode().strip() if done.returncode == 0 else None


def branch_sha(bare: Path, branch: str) -> str | None:
    if not REF_RE.match(branch):
        return None
    return resolve(bare, f"refs/heads/{branch}")


RefChange = Literal["done", "exists", "missing", "not_fast_forward", "protected", "no_commit"]


def change_branch(
    bare: Path, branch: str, sha: str | None, *, create: bool = False, force: bool = False
) -> RefChange:
    """Create, move (fast-forward unless `force`) or, with `sha` None, delete `branch`,
    as GitHub's refs API does; what came of it."""
    if not REF_RE.match(branch):
        return "missing"
    ref = f"refs/heads/{branch}"
    protected = bare / "fakegithub-protected"
    if protected.exists() and ref in protected.read_text().split():
        return "protected"
    current = branch_sha(bare, branch)
    if sha is None:
        if current is None:
            return "missing"
        run_git(bare, "update-ref", "-d", ref, current)
        return "done"
    if resolve(bare, sha) != sha:
        return "no_commit"
    if create and current is not None:
        return "exists"
    if not create and current is None:
        return "missing"
    if current is not None and not force:
        ancestor = run_git(bare, "merge-base", "--is-ancestor", current, sha, check=False)
        if ancestor.returncode != 0:
            return "not_fast_forward"
    run_git(bare, "update-ref", ref, sha, current or "0" * 40)
    return "done"


def branches(bare: Path) -> list[tuple[str, str]]:
    """(name, head sha) of every branch, by name."""
    done = run_git(bare, "for-each-ref", "--format=%(refname:short) %(objectname)", "refs/heads")
    found = (line.split(" ", 1) for line in done.stdout.decode().splitlines() if " " in line)
    return sorted((name, sha) for name, sha in found)


def read_file(bare: Path, rev: str, path: str) -> tuple[str, bytes] | None:
    """(blob sha, content) of `path` at `rev` (as `git show rev:path` sees it), or None."""
    commit = resolve(bare, rev)
    if commit is None or path.startswith("/") or not path:
        return None
    found = run_git(bare, "rev-parse", "--verify", "--quiet", f"{commit}:{path}", check=False)
    if found.returncode != 0:
        return None
    blob = found.stdout.decode().strip()
    kind = run_git(bare, "cat-file", "-t", blob).stdout.decode().strip()
    if kind != "blob":
        return None
    return blob, run_git(bare, "cat-file", "blob", blob).stdout


@dataclass(frozen=True)
class Divergence:
    commits: int
    additions: int
    deletions: int
    changed_files: int


def divergence(bare: Path, base_sha: str, head_sha: str) -> Divergence:
    """How `head_sha` differs from where it left `base_sha`, as a pull request counts it."""
    merge_base = run_git(bare, "merge-base", base_sha, head_sha, check=False).stdout.decode()
    start = merge_base.strip() or base_sha
    count = run_git(bare, "rev-list", "--count", f"{base_sha}..{head_sha}").stdout.decode()
    numstat = run_git(bare, "diff", "--numstat", start, head_sha).stdout.decode()
    additions = deletions = files = 0
    for line in numstat.splitlines():
        added, deleted, _ = line.split("\t", 2)
        files += 1
        additions += int(added) if added.isdigit() else 0
        deletions += int(deleted) if deleted.isdigit() else 0
    return Divergence(int(count.strip()), additions, deletions, files)


_STATUS_BY_LETTER = {
    "A": "added",
    "D": "removed",
    "M": "modified",
    "R": "renamed",
    "C": "copied",
    "T": "changed",
}


@dataclass(frozen=True)
class ChangedFile:
    filename: str
    status: str
    previous_filename: str | None
    additions: int
    deletions: int
    patch: str | None  # None for a binary file


def changed_files(bare: Path, base_sha: str, head_sha: str) -> list[ChangedFile]:
    """What `head_sha` changes since it left `base_sha`, file by file, as GitHub's compare
    lists it (renames found, patches without their `diff --git` headers)."""
    merge_base = run_git(bare, "merge-base", base_sha, head_sha, check=False).stdout.decode()
    start = merge_base.strip() or base_sha
    fields = run_git(bare, "diff", "-M", "--name-status", "-z", start, head_sha).stdout
    parts = fields.decode("utf-8", "replace").split("\0")
    files: list[ChangedFile] = []
    index = 0
    while index < len(parts) and parts[index]:
        letter = parts[index][0]
        if letter in "RC":
            old, new, index = parts[index + 1], parts[index + 2], index + 3
        else:
            old, new, index = parts[index + 1], parts[index + 1], index + 2
        numstat = run_git(bare, "diff", "-M", "--numstat", start, head_sha, "--", old, new)
        added, deleted = [*numstat.stdout.decode().split("\t"), "-", "-"][:2]
        binary = not added.isdigit()
        diff = run_git(bare, "diff", "-M", start, head_sha, "--", old, new).stdout.decode(
            "utf-8", "replace"
        )
        hunk = diff.find("\n@@")
        files.append(
            ChangedFile(
                filename=new,
                status=_STATUS_BY_LETTER.get(letter, "modified"),
                previous_filename=old if letter in "RC" else None,
                additions=0 if binary else int(added),
                deletions=0 if binary else int(deleted),
                patch=None if binary or hunk < 0 else diff[hunk + 1 :].rstrip("\n"),
            )
        )
    return files


# --- smart HTTP ---------------------------------------------------------------------------


def _challenge(message: str = "Invalid username or password.") -> Response:
    return PlainTextResponse(
        message + "\n", status_code=401, headers={"WWW-Authenticate": 'Basic realm="GitHub"'}
    )


def _basic_password(header: str) -> str | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return password if user == GIT_USER else None


def _parse_cgi(output: bytes) -> tuple[int, dict[str, str], bytes]:
    for separator in (b"\r\n\r\n", b"\n\n"):
        head, found, body = output.partition(separator)
        if found:
            break
    else:
        return 502, {}, b"bad CGI output\n"
    status = 200
    headers: dict[str, str] = {}
    for line in head.decode("latin-1").splitlines():
        key, _, value = line.partition(":")
        if key.lower() == "status":
            status = int(value.split()[0])
        elif key:
            headers[key.strip()] = value.strip()
    return status, headers, body


class GitHttp:
    """The endpoint for /{owner}/{repo}.git/{rest}, backed by `git http-backend`."""

    def __init__(self, root: Path, state: FakeState) -> None:
        self.root = root
        self.state = state

    async def handle(self, request: Request) -> Response:
        if self.state.git_delay:
            await asyncio.sleep(self.state.git_delay)
        body = await request.body()
        response = await self._answer(request, body)
        self.state.record(
            RecordedRequest(
                method=request.method,
                path=request.url.path,
                query=dict(request.query_params),
                json=None,
                status=response.status_code,
            ),
            git=True,
        )
        return response

    async def _answer(self, request: Request, body: bytes) -> Response:
        owner = request.path_params["owner"]
        name = request.path_params["repo"]
        rest = request.path_params["rest"]
        push = request.query_params.get("service") == "git-receive-pack" or rest.endswith(
            "git-receive-pack"
        )
        password = _basic_password(request.headers.get("authorization", ""))
        token = self.state.valid_token(password) if password else None
        if token is None:
            return _challenge()
        inst = self.state.installations.get(token.installation_id)
        repo = self.state.repo(owner, name)
        if repo is None or inst is None or inst.account != owner or not token.covers(name):
            return PlainTextResponse("Repository not found.\n", status_code=404)
        if push and self.state.git_push_outage:
            return PlainTextResponse(UNAVAILABLE, status_code=503)
        if push and not token.allows("contents", "write"):
            return PlainTextResponse(
                f"Permission to {owner}/{name}.git denied to {GIT_USER}.\n", status_code=403
            )
        env = {
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": f"/{owner}/{name}.git/{rest}",
            "REQUEST_METHOD": request.method,
            "QUERY_STRING": request.url.query,
            "CONTENT_TYPE": request.headers.get("content-type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": GIT_USER,
            "REMOTE_ADDR": request.client.host if request.client else "127.0.0.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
        }
        if "git-protocol" in request.headers:
            env["GIT_PROTOCOL"] = request.headers["git-protocol"]
        if "content-encoding" in request.headers:
            env["HTTP_CONTENT_ENCODING"] = request.headers["content-encoding"]
        web = f"{str(request.base_url).rstrip('/')}/{owner}/{name}"
        env["FAKEGITHUB_RULES"] = json.dumps(
            {
                "workflows": token.allows("workflows", "write"),
                "push_protection": repo.push_protection,
                "signed_commits": repo.signed_commits,
                "max_file_bytes": repo.max_file_bytes,
                "web": web,
            }
        )
        with tempfile.TemporaryDirectory(prefix="fakegithub-push-") as tmp:
            env["FAKEGITHUB_REASONS"] = str(Path(tmp) / "reasons.json")
            done = await run_in_threadpool(
                subprocess.run,
                ["git", "http-backend"],
                input=body,
                env=_env(env),
                capture_output=True,
                timeout=120,
            )
            reasons_file = Path(env["FAKEGITHUB_REASONS"])
            reasons = json.loads(reasons_file.read_text()) if reasons_file.exists() else {}
        status, headers, payload = _parse_cgi(done.stdout)
        if reasons:
            payload = _with_reasons(payload, reasons)
        return Response(payload, status_code=status, headers=headers)


# --- GitHub's reasons in the push report ------------------------------------------------------


def _pkts(data: bytes) -> list[bytes | None]:
    """pkt-lines of `data`; None for a flush packet."""
    out: list[bytes | None] = []
    i = 0
    while i + 4 <= len(data):
        size = int(data[i : i + 4], 16)
        if size < 4:
            out.append(None)
            i += 4
            continue
        out.append(data[i + 4 : i + size])
        i += size
    return out


def _pkt(data: bytes | None) -> bytes:
    return b"0000" if data is None else b"%04x" % (len(data) + 4) + data


def _with_reasons(payload: bytes, reasons: Mapping[str, str]) -> bytes:
    """The receive-pack report with `ng <ref> pre-receive hook declined` saying GitHub's reason.

    A hook cannot choose that text; GitHub's own receive side does, e.g. `push declined due
    to repository rule violations`.
    """

    def fix(report: bytes) -> bytes:
        lines = []
        for line in _pkts(report):
            if line is not None and line.startswith(b"ng ") and HOOK_DECLINED in line:
                ref = line[3:].split(b" ", 1)[0].decode()
                if ref in reasons:
                    line = b"ng " + ref.encode() + b" " + reasons[ref].encode() + b"\n"
            lines.append(_pkt(line))
        return b"".join(lines)

    packets = _pkts(payload)
    sideband = any(p is not None and p[:1] in (b"\x01", b"\x02", b"\x03") for p in packets)
    if not sideband:
        return fix(payload)
    report = b"".join(p[1:] for p in packets if p is not None and p[:1] == b"\x01")
    others = [_pkt(p) for p in packets if p is not None and p[:1] != b"\x01"]
    return b"".join(others) + _pkt(b"\x01" + fix(report)) + _pkt(None)
