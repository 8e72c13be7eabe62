"""The host's mounts that hand a run's directories to a sandbox that is already running.

A prepared sandbox mounts empty directories of a shared tmpfs with `rslave` propagation; a
mount placed later on one of them appears in the sandbox. Flags set by a remount do not
propagate, so each directory is bound and given its flags (read-only, nosuid, nodev) on a
private stage first, then moved in whole: the sandbox never sees it writable, not even
for a moment. Root only (`can_mount`).
"""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_SHARED = 1 << 20
MNT_DETACH = 0x2

_libc = ctypes.CDLL(None, use_errno=True)


def can_mount() -> bool:
    return os.geteuid() == 0


def _mount(source: str | None, target: Path, kind: str | None, flags: int, data: str = "") -> None:
    code = _libc.mount(
        source.encode() if source is not None else None,
        str(target).encode(),
        kind.encode() if kind is not None else None,
        flags,
        data.encode() if data else None,
    )
    if code != 0:
        failed = ctypes.get_errno()
        raise OSError(failed, f"mount: {os.strerror(failed)}", str(target))


def shared_tmpfs(path: Path, size: str = "4m") -> None:
    """A small tmpfs at `path` (only root may look in), whose mounts propagate to the
    sandboxes that bind its directories."""
    path.mkdir(parents=True, exist_ok=True)
    _mount("trimo-warm", path, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode=0700")
    _mount(None, path, None, MS_REC | MS_SHARED)


def private_stage(path: Path) -> None:
    """`path` bound on itself and made private: what is mounted there stays on the host."""
    path.mkdir(mode=0o700, exist_ok=True)
    _mount(str(path), path, None, MS_BIND)
    _mount(None, path, None, MS_PRIVATE)


def place(source: Path, target: Path, stage: Path, read_only: bool) -> None:
    """Bind `source` on `target` (a directory a sandbox shares), nosuid and nodev, and
    read-only when asked, through the empty directory `stage` on a private mount; linked
    to no other copy of `source`'s mount."""
    _mount(str(source), stage, None, MS_BIND)
    try:
        # A bind of a shared mount joins its peer group: mounts made later under the
        # pipeline's disk would reach the box, and the box's under the disk's other copies.
        _mount(None, stage, None, MS_PRIVATE)
        flags = MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | (MS_RDONLY if read_only else 0)
        _mount(None, stage, None, flags)
        _mount(str(stage), target, None, MS_MOVE)
    except OSError:
        detach(stage)
        raise


def detach(path: Path) -> bool:
    """Unmount `path` and what is below it, at once for the host (the kernel lets go of it
    when nothing uses it any more); False when nothing was mounted there."""
    if _libc.umount2(str(path).encode(), MNT_DETACH) == 0:
        return True
    failed = ctypes.get_errno()
    if failed in (errno.EINVAL, errno.ENOENT):  # not a mount point, or gone
        return False
    raise OSError(failed, f"umount: {os.strerror(failed)}", str(path))
