"""Every image Trimo builds starts FROM a base pinned by digest, or FROM the `BASE_IMAGE`
argument that scripts/pin-base-images pins. (Whether the pinned digest is Debian's current
one needs the registry, which this suite does not reach.)"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import docker
import pytest

from runner.images import pinned_base, usable_base

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "pin-base-images"
DIGEST = "sha256:" + "0123456789abcdef" * 4


def managed_files(script: Path = SCRIPT) -> list[str]:
    match = re.search(r"^FILES=\((.*)\)$", script.read_text(), re.M)
    assert match, "scripts/pin-base-images names its Dockerfiles in FILES=(…)"
    return match.group(1).split()


def dockerfiles() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "*Dockerfile*"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return listed or sorted(str(p.relative_to(ROOT)) for p in ROOT.rglob("Dockerfile"))


def unpinned_froms(path: Path, managed: bool) -> list[str]:
    """The FROM lines of a Dockerfile that neither name a digest, an earlier stage, nor (in a
    file the script manages) the BASE_IMAGE argument."""
    stages: set[str] = set()
    wrong = []
    for line in path.read_text().splitlines():
        match = re.match(r"FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?\s*$", line, re.I)
        if not match:
            continue
        ref, stage = match.groups()
        pinned = re.search(r"@sha256:[0-9a-f]{64}$", ref) is not None
        if not (pinned or ref in stages or (managed and ref == "${BASE_IMAGE}")):
            wrong.append(line)
        if stage:
            stages.add(stage)
    return wrong


def test_every_from_is_pinned_or_the_argument_the_script_pins() -> None:
    managed = managed_files()
    found = dockerfiles()
    assert set(managed) <= set(found) and "deploy/Dockerfile" in managed
    for name in found:
        path = ROOT / name
        assert not unpinned_froms(path, name in managed), name
        if name in managed:
            args = re.findall(r"^ARG BASE_IMAGE=(\S+)$", path.read_text(), re.M)
            assert len(args) == 1, f"{name}: one ARG BASE_IMAGE=… line"
            assert args[0].split("@")[0] == "debian:bookworm-slim", name


def copy_of_the_repository(tmp_path: Path) -> Path:
    tree = tmp_path / "repo"
    (tree / "scripts").mkdir(parents=True)
    shutil.copy(SCRIPT, tree / "scripts" / SCRIPT.name)
    for name in managed_files():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tree / name)
    return tree


def pin(tree: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(tree / "scripts" / SCRIPT.name), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_script_pins_every_dockerfile_to_one_digest(tmp_path: Path) -> None:
    tree = copy_of_the_repository(tmp_path)
    before = pin(tree, "--check")
    pinned_already = all(
        "@sha256:" in (ROOT / name).read_text().split("ARG BASE_IMAGE=")[1].split("\n")[0]
        for name in managed_files()
    )
    assert before.returncode == (0 if pinned_already else 1), before.stderr
    done = pin(tree, DIGEST)
    assert done.returncode == 0, done.stderr
    for name in managed_files():
        pinned, original = (tree / name).read_text(), (ROOT / name).read_text()
        assert f"ARG BASE_IMAGE=debian:bookworm-slim@{DIGEST}\n" in pinned, name
        changed = [
            (a, b)
            for a, b in zip(original.splitlines(), pinned.splitlines(), strict=True)
            if a != b
        ]
        assert all(a.startswith("ARG BASE_IMAGE=") for a, _ in changed), changed
    assert pin(tree, "--check").returncode == 0
    newer = "sha256:" + "f" * 64  # a new digest replaces the old one
    assert pin(tree, newer).returncode == 0
    assert (
        f"ARG BASE_IMAGE=debian:bookworm-slim@{newer}\n" in (tree / "deploy/Dockerfile").read_text()
    )


@pytest.mark.parametrize("bad", ["sha256:abc", "latest", "sha256:" + "G" * 64])
def test_the_script_refuses_what_is_not_a_digest(tmp_path: Path, bad: str) -> None:
    tree = copy_of_the_repository(tmp_path)
    before = {n: (tree / n).read_text() for n in managed_files()}
    result = pin(tree, bad)
    assert result.returncode == 2 and "not sha256:<64 hex digits>" in result.stderr
    assert {n: (tree / n).read_text() for n in managed_files()} == before


@pytest.mark.docker
def test_a_pinned_digest_that_cannot_be_pulled_is_built_from_its_tag(
    docker_client: docker.DockerClient,
) -> None:
    """A machine that reaches no registry (as this one) still builds once the ARG is pinned:
    from the tag sandbox/build-base.sh made. (A digest the engine has, or pulls, is used as
    it is; no registry here to show it.)"""
    unreachable = f"127.0.0.1:1/trimo-base:1@{DIGEST}"
    assert usable_base(docker_client, unreachable) == "127.0.0.1:1/trimo-base:1"
    assert usable_base(docker_client, "debian:bookworm-slim") == "debian:bookworm-slim"
    for name in managed_files():
        assert pinned_base(ROOT / name).split("@")[0] == "debian:bookworm-slim"


@pytest.mark.docker
def test_the_script_pins_what_the_registry_says_or_says_it_cannot(tmp_path: Path) -> None:
    """With the real engine: where the registry answers, every ARG gets the pulled digest;
    where it does not (this machine), a clear refusal and nothing changed."""
    tree = copy_of_the_repository(tmp_path)
    before = {n: (tree / n).read_text() for n in managed_files()}
    result = pin(tree)
    if result.returncode == 0:
        assert pin(tree, "--check").returncode == 0
    else:
        assert result.returncode == 1 and "cannot pull debian:bookworm-slim here" in result.stderr
        assert "give its digest" in result.stderr
        assert {n: (tree / n).read_text() for n in managed_files()} == before
