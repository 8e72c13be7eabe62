"""What the benchmarks share: a scratch directory, a small repository, a script-agent run."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from runner.contract import NetworkMode
from runner.job import RepoRef, Resources, RunRequest


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


def script_run(
    repo: Path,
    run_id: str,
    prompt: str,
    image: str = "trimo-agent:base",
    network: NetworkMode = "none",
) -> RunRequest:
    """A run of the `script` agent on pipeline `bench` of `repo`."""
    return RunRequest(
        run_id=run_id,
        pipeline="bench",
        repo=RepoRef(full_name="bench/repo", clone_url=str(repo)),
        branch="trimo/bench",
        base_branch="main",
        prompt=prompt,
        agent="script",
        image=image,
        network=network,
        resources=Resources(memory="1g", cpus=1, pids=256),
    )
