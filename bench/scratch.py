"""What the benchmarks share: a scratch directory with a small repository, removed after."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def empty_repo(path: Path) -> Path:
    """A repository at `path` with one empty commit on `main`."""
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    subprocess.run(
        ["git", "-C", str(path), "-c", "user.name=b", "-c", "user.email=b@b",
         "commit", "-q", "--allow-empty", "-m", "start"],
        check=True,
    )  # fmt: skip
    return path


@contextmanager
def scratch() -> Iterator[Path]:
    """A temporary directory; pipelines' disks the engine left mounted there are unmounted."""
    root = Path(tempfile.mkdtemp(prefix="trimo-bench-"))
    try:
        yield root
    finally:
        for mount in root.glob("**/pipelines/*/*/root"):
            subprocess.run(["umount", "--lazy", str(mount)], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
