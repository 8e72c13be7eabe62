"""What crosses from the sandbox to the host: one regular file, a git bundle.

Inside the sandbox, `trimo-export` bundles the agent's new commits into the
run's out directory. The host opens that file without following links, takes
it only if it is a regular file under the size cap, copies it where only the
host can write, verifies it against the trusted mirror, fetches it with fsck
into a ref of the run, and checks each new file against the file size cap.
Nothing else the agent wrote is ever read by the host.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from runner import bounded, gitops
from runner.errors import HandoffRefused
from runner.printable import printable

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Caps on what an agent may hand over in one run."""

    bundle_bytes: int = 1024 * 1024 * 1024
    """Bundles taken in one run, together (as handed over: compressed)."""
    file_bytes: int = 100 * 1024 * 1024
    """GitHub refuses files over 100 MB; a bigger file would only fail later."""
    content_bytes: int = 4 * 1024 * 1024 * 1024
    """New file contents in one run, together, uncompressed: a bundle of zeros is small but
    costs the runner's CPU in proportion to this."""


def size_text(n: int) -> str:
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def take_file(directory: Path, name: str, dest: Path, cap: int) -> bool:
    """Copy `directory/name` to `dest` if it is a regular file of at most `cap` bytes.

    Never follows a link; False when there is no such file. The file is removed
    from `directory` once taken, so the next hand-over starts afresh."""
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        try:
            fd = os.open(
                name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd
            )
        except FileNotFoundError:
            return False
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EACCES):
                raise HandoffRefused(
                    "the agent's work was handed over as a link, not a file"
                ) from exc
            raise
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise HandoffRefused("the agent's work was handed over as something other than a file")
        with os.fdopen(fd, "rb") as source:
            _refuse_over(info.st_size, cap)
            written = 0
            out_fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(out_fd, "wb") as target:
                while chunk := source.read(CHUNK):
                    written += len(chunk)
                    _refuse_over(written, cap)
                    target.write(chunk)
        os.unlink(name, dir_fd=dir_fd)
        return True
    finally:
        os.close(dir_fd)


def _refuse_over(size: int, cap: int) -> None:
    if size > cap:
        raise HandoffRefused(
            f"the agent's new commits are over {size_text(cap)} as a bundle, "
            "so they were not taken from the sandbox"
        )


def import_bundle(
    mirror: Path, bundle: Path, ref: str, known: list[str], limits: Limits
) -> tuple[str, int]:
    """Verify `bundle` against the mirror, fetch it with fsck into `ref`, and return its head.

    A bundle with a file over the cap is refused; its commits stay in the mirror
    under `ref` (the runner keeps the work) but the caller must not publish them."""
    verify = gitops.git(
        mirror, "bundle", "verify", "--quiet", str(bundle), check=False, bounds=gitops.UNTRUSTED
    )
    if verify.returncode:
        raise HandoffRefused("the agent's work could not be verified (a damaged or forged bundle)")
    heads = gitops.git(
        mirror, "bundle", "list-heads", str(bundle), check=False, bounds=gitops.UNTRUSTED
    ).stdout.split()
    if len(heads) != 2 or not gitops.SHA_RE.match(heads[0]):
        raise HandoffRefused("the agent's work was handed over in an unexpected shape")
    head = heads[0]
    proc = gitops.git(
        mirror,
        "-c", "fetch.fsckObjects=true", "-c", "transfer.fsckObjects=true",
        "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", str(bundle), f"+{heads[1]}:{ref}",
        check=False,
        bounds=gitops.UNTRUSTED,
    )  # fmt: skip
    if proc.returncode != 0 or gitops.resolve(mirror, ref) != head:
        gitops.log.warning("fetch from bundle failed: %s", gitops.log_excerpt(proc.stderr))
        raise HandoffRefused(
            "the agent's commits failed git's integrity checks (or checking them took more "
            f"than the runner allows: {gitops.UNTRUSTED.describe()})"
        )
    big, new_bytes = new_files(mirror, head, known, limits.file_bytes)
    if big is not None:
        path, size = big
        kept = ref.replace("refs/trimo/runs/", "refs/trimo/refused/", 1)
        gitops.git(mirror, "update-ref", kept, head)
        raise HandoffRefused(
            f"the agent's commits add `{path}` ({size_text(size)}), over the "
            f"{size_text(limits.file_bytes)} limit for one file; they were kept on the runner "
            f"({kept}) and not pushed"
        )
    return head, new_bytes


def new_files(
    mirror: Path, head: str, known: list[str], cap: int
) -> tuple[tuple[str, int] | None, int]:
    """The first new file in `head` (not in `known`) larger than `cap`, if any, and the size
    of all new files together; read as a stream."""
    have = [sha for sha in known if gitops.resolve(mirror, sha)]
    git = ["git", *gitops.SAFE_OPTIONS, *gitops.BOUNDED_OPTIONS]
    env, bounds = gitops.git_env(), gitops.UNTRUSTED
    found: tuple[str, int] | None = None
    total = 0
    with (
        bounded.popen(
            [*git, "rev-list", "--objects", head, "--not", *have], bounds,
            cwd=mirror, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        ) as rev_list,
        bounded.popen(
            [*git, "cat-file", "--batch-check=%(objecttype) %(objectsize) %(rest)"], bounds,
            cwd=mirror, env=env, stdin=rev_list.stdout, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        ) as check,
    ):  # fmt: skip
        assert rev_list.stdout is not None and check.stdout is not None
        rev_list.stdout.close()
        for raw in check.stdout:
            kind, size, *rest = raw.decode("utf-8", errors="replace").rstrip("\n").split(" ", 2)
            if kind != "blob" or not size.isdigit():
                continue
            total += int(size)
            if int(size) > cap:
                found = (printable(rest[0] if rest else "?", 200, one_line=True), int(size))
                break
    return found, total
