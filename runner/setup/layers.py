"""A setup entry restored into a run in O(1): one overlay per kept path.

The entry's image is mounted read-only (loop, `ro,noload`), so nothing on this machine
writes it, and each kept path becomes an overlay: that read-only lower layer under an
upper layer of the run's own, on the pipeline's disk (what the agent writes there counts
against its disk and is thrown away with the run). The merged directories are bind
mounted where the paths go in the sandbox. Nothing is copied, whatever the entry holds.
The overlays are mounted with paths relative to the run's scratch directory, so the
sandbox's mount table (/proc/self/mountinfo shows an overlay's options) names no host path.

Where a path goes in the workspace or home is made by the runner one component at a time,
never following a link (the tree is the agent's); the agent's container is not running.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Final

from runner import disk, gitops
from runner.container import HOME_MOUNT, WORKSPACE_MOUNT
from runner.errors import TrimoError
from runner.setup.spec import HOME_PREFIX

LAYERS: Final = "layers"
"""In an entry's root: `layers/<n>` holds the n-th of `paths`."""
IMAGE_NAME: Final = disk.IMAGE_NAME
LOWER: Final = "lower"
"""In a run's scratch directory: the entry, mounted read-only."""


def can_restore() -> bool:
    """Whether this process can restore setup entries (mounts as root, with overlayfs)."""
    try:
        kinds = Path("/proc/filesystems").read_text()
    except OSError:
        return False
    return os.geteuid() == 0 and "\toverlay\n" in kinds


def layer_name(index: int) -> str:
    return f"{LAYERS}/{index}"


def in_sandbox(path: str) -> str:
    """Where a setup path is in the sandbox."""
    if path.startswith(HOME_PREFIX):
        return f"{HOME_MOUNT}/{path.removeprefix(HOME_PREFIX)}"
    return f"{WORKSPACE_MOUNT}/{path}"


def on_host(path: str, workspace: Path, home: Path) -> tuple[Path, str]:
    """(base directory, path under it) of a setup path on the host."""
    if path.startswith(HOME_PREFIX):
        return home, path.removeprefix(HOME_PREFIX)
    return workspace, path


@contextmanager
def restored(
    entry: Path,
    paths: list[str],
    scratch: Path,
    owner: int | None,
) -> Iterator[dict[Path, str]]:
    """`entry` overlaid for each of `paths` (upper layers under `scratch`, which must be on
    the pipeline's disk): host directory → where to mount it in the sandbox. Where they go
    in the workspace and home is made by `make_dirs`."""
    with ExitStack() as stack:
        gitops.remove_tree(scratch)
        scratch.mkdir(mode=0o700)
        stack.callback(gitops.remove_tree, scratch)
        lower = scratch / LOWER
        lower.mkdir()
        image = entry / IMAGE_NAME
        if image.is_file():
            _mount(["-o", "ro,noload,nosuid,nodev,loop", str(image), str(lower)], "its cache")
            stack.callback(disk.unmount, lower)
        else:  # disks are off: the entry's root directory (which no run writes), read-only
            source = str(entry / disk.ROOT_NAME)
            _mount(["--bind", "-o", "ro,nosuid,nodev", source, str(lower)], "its cache")
            stack.callback(_unbind, lower)
        mounts: dict[Path, str] = {}
        for index, path in enumerate(paths):
            upper, work, merged = (f"{kind}{index}" for kind in ("u", "w", "m"))
            for made in (upper, work, merged):
                (scratch / made).mkdir(mode=0o755)
            if owner is not None:
                os.chown(scratch / upper, owner, owner)
            # Relative to `scratch`: the sandbox's mount table shows these options as given.
            options = f"lowerdir={LOWER}/{layer_name(index)},upperdir={upper},workdir={work}"
            _mount(["-t", "overlay", "overlay", "-o", f"{options},nosuid,nodev", merged], path,
                   cwd=scratch)  # fmt: skip
            stack.callback(disk.unmount, scratch / merged)
            mounts[scratch / merged] = in_sandbox(path)
        yield mounts


def make_dirs(base: Path, below: str, owner: int | None) -> None:
    """`base/below` as directories, made (owned by `owner`) where missing, never through a
    link; TrimoError when a file or a link is in the way."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for part in below.split("/"):
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fd)
                if owner is not None:
                    os.chown(part, owner, owner, dir_fd=fd, follow_symlinks=False)
            try:
                inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError:
                raise TrimoError(
                    f"The workspace holds a file or a link at {below}, where setup's "
                    "directory goes.",
                    "remove it from the branch (and list the directory in .gitignore)",
                ) from None
            os.close(fd)
            fd = inner
    finally:
        os.close(fd)


def _unbind(place: Path) -> None:
    """Unmount a bind mount (`os.path.ismount` does not see one of the same filesystem)."""
    if subprocess.run(["umount", str(place)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "--lazy", str(place)], capture_output=True)


def _mount(args: list[str], what: str, cwd: Path | None = None) -> None:
    proc = subprocess.run(["mount", *args], capture_output=True, text=True, cwd=cwd)
    if proc.returncode != 0:
        raise TrimoError(
            f"The setup cache could not be mounted for {what}: {proc.stderr.strip()[-300:]}",
            "the runner needs root and overlayfs to restore a setup",
        )
