"""The one thing that crosses from sandbox to host: a bundle file, taken with suspicion."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from runner.errors import HandoffRefused
from runner.handoff import Limits, import_bundle, take_file
from tests.conftest import git


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    out, host = tmp_path / "out", tmp_path / "host"
    out.mkdir()
    host.mkdir()
    return out, host


def test_a_regular_file_is_copied_and_removed(dirs: tuple[Path, Path]) -> None:
    out, host = dirs
    (out / "run.bundle").write_bytes(b"x" * 1000)
    assert take_file(out, "run.bundle", host / "copy", cap=1000)
    assert (host / "copy").read_bytes() == b"x" * 1000
    assert not (out / "run.bundle").exists()


def test_no_file_is_no_hand_over(dirs: tuple[Path, Path]) -> None:
    out, host = dirs
    assert not take_file(out, "run.bundle", host / "copy", cap=10)


def test_a_link_to_a_host_file_is_refused(dirs: tuple[Path, Path]) -> None:
    out, host = dirs
    (host / "secret").write_text("host secret")
    (out / "run.bundle").symlink_to(host / "secret")
    with pytest.raises(HandoffRefused, match="link"):
        take_file(out, "run.bundle", host / "copy", cap=1000)
    assert not (host / "copy").exists()


def test_a_fifo_is_refused_without_blocking(dirs: tuple[Path, Path]) -> None:
    out, host = dirs
    os.mkfifo(out / "run.bundle")
    with pytest.raises(HandoffRefused, match="other than a file"):
        take_file(out, "run.bundle", host / "copy", cap=1000)


def test_a_directory_is_refused(dirs: tuple[Path, Path]) -> None:
    out, host = dirs
    (out / "run.bundle").mkdir()
    with pytest.raises(HandoffRefused):
        take_file(out, "run.bundle", host / "copy", cap=1000)


def test_an_oversized_file_is_refused_with_the_limit(dirs: tuple[Path, Path]) -> None:
    out, host = dirs
    (out / "run.bundle").write_bytes(b"x" * 2048)
    with pytest.raises(HandoffRefused, match=r"over 1\.0 KB"):
        take_file(out, "run.bundle", host / "copy", cap=1024)


def test_a_linked_out_directory_is_refused(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    _out, host = dirs
    (host / "run.bundle").write_text("host file")
    linked = tmp_path / "linked-out"
    linked.symlink_to(host)
    with pytest.raises(OSError):
        take_file(linked, "run.bundle", tmp_path / "copy", cap=1000)
    assert (host / "run.bundle").exists()


def mirror_with_commit(tmp_path: Path) -> tuple[Path, str]:
    mirror = tmp_path / "mirror.git"
    git(tmp_path, "init", "-q", "--bare", str(mirror))
    work = tmp_path / "work"
    git(tmp_path, "init", "-q", "-b", "main", str(work))
    (work / "a.txt").write_text("a\n")
    git(work, "add", "-A")
    git(work, "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qm", "a")
    git(work, "push", "-q", str(mirror), "main")
    return mirror, git(work, "rev-parse", "HEAD")


def test_a_forged_bundle_is_refused(tmp_path: Path) -> None:
    mirror, base = mirror_with_commit(tmp_path)
    forged = tmp_path / "forged.bundle"
    forged.write_bytes(b"# v2 git bundle\n" + f"{'f' * 40} HEAD\n\n".encode() + b"PACK\x00garbage")
    with pytest.raises(HandoffRefused):
        import_bundle(mirror, forged, "refs/trimo/runs/x", [base], Limits())
    assert subprocess.run(
        ["git", "rev-parse", "--verify", "-q", "refs/trimo/runs/x"], cwd=mirror
    ).returncode


def test_a_file_over_the_cap_is_named_and_not_published(tmp_path: Path) -> None:
    mirror, base = mirror_with_commit(tmp_path)
    work = tmp_path / "work"
    (work / "big.bin").write_bytes(os.urandom(300_000))
    git(work, "add", "-A")
    git(work, "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qm", "big")
    bundle = tmp_path / "run.bundle"
    git(work, "bundle", "create", str(bundle), "HEAD", f"^{base}")
    with pytest.raises(HandoffRefused, match=r"`big\.bin` \(293\.0 KB\)"):
        import_bundle(mirror, bundle, "refs/trimo/runs/x", [base], Limits(file_bytes=100_000))
    kept = git(mirror, "rev-parse", "refs/trimo/refused/x")
    assert kept == git(work, "rev-parse", "HEAD")  # the work stays on the runner


def test_a_good_bundle_lands_on_the_run_ref(tmp_path: Path) -> None:
    mirror, base = mirror_with_commit(tmp_path)
    work = tmp_path / "work"
    (work / "b.txt").write_text("b\n")
    git(work, "add", "-A")
    git(work, "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qm", "b")
    bundle = tmp_path / "run.bundle"
    git(work, "bundle", "create", str(bundle), "HEAD", f"^{base}")
    head, content = import_bundle(mirror, bundle, "refs/trimo/runs/x", [base], Limits())
    assert head == git(work, "rev-parse", "HEAD")
    assert content == len("b\n")  # only the new file counts
    assert git(mirror, "rev-parse", "refs/trimo/runs/x") == head
