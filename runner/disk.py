"""A pipeline's own disk: workspace and home on a size-capped filesystem.

As root, each pipeline gets a sparse file holding an ext4 filesystem, mounted
(loop, nosuid, nodev) only while one of its runs goes, so an agent that fills
its disk fills only its own. Without root or loop devices, the pipeline's
directory is a plain one and no disk limit applies (`trimo doctor` says so).
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from runner.errors import TrimoError

log = logging.getLogger(__name__)

IMAGE_NAME = "disk.img"
ROOT_NAME = "root"
FULL_BYTES = 1 << 20
"""Less room than this left to the agent is a full disk."""


def parse_size(text: str) -> int:
    """Bytes in a size such as `10g`, `512m` or `0` (no limit)."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    clean = text.strip().lower().removesuffix("b")
    try:
        if clean and clean[-1] in units:
            return int(float(clean[:-1]) * units[clean[-1]])
        return int(clean)
    except ValueError as exc:
        raise ValueError(f"not a size: {text!r} (try 10g or 512m)") from exc


def can_limit() -> bool:
    """Whether this process can give pipelines a size-capped filesystem."""
    return os.geteuid() == 0 and Path("/dev/loop-control").exists()


def mount(pipeline_dir: Path, size: int) -> Path:
    """The root directory under `pipeline_dir`, on a filesystem of its own of `size` bytes
    (a plain directory when `size` is 0 or limits are not possible); `unmount` it after."""
    root = pipeline_dir / ROOT_NAME
    root.mkdir(parents=True, exist_ok=True, mode=0o755)
    if size > 0 and can_limit() and not os.path.ismount(root):
        _mount(pipeline_dir / IMAGE_NAME, root, size)
    return root


@contextmanager
def mounted(pipeline_dir: Path, size: int) -> Iterator[Path]:
    """The pipeline's root directory, on its own filesystem of `size` bytes while the
    context lasts (a plain directory when `size` is 0 or limits are not possible)."""
    root = mount(pipeline_dir, size)
    if size <= 0 or not can_limit():
        yield root
        return
    try:
        yield root
    finally:
        unmount(root)


def full(root: Path) -> bool:
    """Whether the size-capped filesystem at `root` has no room left for the agent."""
    if not os.path.ismount(root):
        return False
    stats = os.statvfs(root)
    return stats.f_bavail * stats.f_frsize < FULL_BYTES


def _mount(image: Path, root: Path, size: int) -> None:
    if not image.exists():
        with image.open("wb") as handle:
            handle.truncate(size)
        image.chmod(0o600)
        # 2% reserved for root: an agent that fills its disk leaves room for the runner's own
        # writes (the next run's /trimo files), so the pipeline can still run.
        _run(["mkfs.ext4", "-q", "-F", "-m", "2", "-E",
              "lazy_itable_init=1,lazy_journal_init=1,root_owner=0:0", str(image)],
             "could not make the pipeline's filesystem")  # fmt: skip
    elif image.stat().st_size < size:
        with image.open("r+b") as handle:
            handle.truncate(size)
        _run(["e2fsck", "-f", "-p", str(image)], "could not check the pipeline's filesystem")
        _run(["resize2fs", "-f", str(image)], "could not grow the pipeline's filesystem")
    _run(["mount", "-o", "loop,nosuid,nodev", str(image), str(root)],
         "could not mount the pipeline's filesystem")  # fmt: skip
    os.chmod(root, 0o755)


def unmount(root: Path) -> None:
    """Unmount a pipeline's root (and what is mounted below it, such as a run's setup
    layers), waiting briefly for a container that still holds it."""
    for _ in range(20):
        if not os.path.ismount(root):
            return
        proc = subprocess.run(["umount", "-R", str(root)], capture_output=True, text=True)
        if proc.returncode == 0:
            return
        time.sleep(0.1)
    subprocess.run(["umount", "--lazy", str(root)], capture_output=True)


def _run(args: list[str], what: str) -> None:
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        log.warning("%s: %s", args[0], proc.stderr.strip()[-400:])
        raise TrimoError(what, "check that this machine has loop devices, or set TRIMO_DISK=0")
