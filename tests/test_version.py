"""Trimo's version is the git tag it was built from (setuptools-scm, with pyproject.toml's
own settings), and stays sane without tags or without git: what CI's clone, a Docker build
context, a copy and a `git archive` tarball get."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
from importlib.metadata import version
from pathlib import Path

import yaml

from runner import __version__

ROOT = Path(__file__).resolve().parent.parent
GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
    "GIT_CONFIG_GLOBAL": os.devnull,
}


def git(cwd: Path, *args: str) -> bytes:
    return subprocess.run(
        ["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV}, check=True, capture_output=True
    ).stdout


def scm_version(tree: Path, **env: str) -> str:
    """The version a build of `tree` gets, as setuptools-scm says with its pyproject.toml."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SETUPTOOLS_SCM")}
    result = subprocess.run(
        [sys.executable, "-m", "setuptools_scm", "--root", str(tree), "--config",
         str(tree / "pyproject.toml")],
        env={**clean, **GIT_ENV, **env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def checkout(tmp_path: Path) -> Path:
    """A repository holding Trimo's pyproject.toml and .git_archival.txt, one commit."""
    tree = tmp_path / "trimo"
    tree.mkdir()
    for name in ("pyproject.toml", ".git_archival.txt", ".gitattributes"):
        shutil.copy(ROOT / name, tree / name)
    git(tree, "init", "-q", "-b", "main")
    git(tree, "add", ".")
    git(tree, "commit", "-qm", "one")
    return tree


def test_a_tag_is_the_version_and_commits_after_it_are_the_next_ones_dev(tmp_path: Path) -> None:
    tree = checkout(tmp_path)
    assert scm_version(tree).startswith("0.1.dev1+g")  # CI's clone has no tags
    git(tree, "tag", "v1.2.3")
    assert scm_version(tree) == "1.2.3"
    (tree / "new.txt").write_text("x")
    git(tree, "add", ".")
    git(tree, "commit", "-qm", "two")
    assert scm_version(tree).startswith("1.2.4.dev1+g")


def test_without_git_the_version_is_the_fallback_or_the_one_given(tmp_path: Path) -> None:
    copy = tmp_path / "copy"  # a Docker build context: no .git
    copy.mkdir()
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    assert scm_version(copy) == "0.0"
    assert scm_version(copy, SETUPTOOLS_SCM_PRETEND_VERSION_FOR_TRIMO="1.2.3") == "1.2.3"
    assert scm_version(copy, SETUPTOOLS_SCM_PRETEND_VERSION_FOR_TRIMO="") == "0.0"


def test_a_git_archive_tarball_knows_its_tag(tmp_path: Path) -> None:
    tree = checkout(tmp_path)
    git(tree, "tag", "v2.0.1")
    unpacked = tmp_path / "unpacked"
    with tarfile.open(fileobj=io.BytesIO(git(tree, "archive", "--format=tar", "HEAD"))) as tar:
        tar.extractall(unpacked, filter="data")
    assert scm_version(unpacked) == "2.0.1"


def test_trimo_says_the_installed_version(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.ops.cli", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout == f"trimo {__version__}\n"
    assert __version__ == version("trimo")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert "setuptools-scm>=8" in project["build-system"]["requires"]
    assert project["tool"]["setuptools_scm"]["fallback_version"] == "0.0"


def test_the_apps_image_is_built_with_the_version_it_is_given() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "ARG TRIMO_VERSION" in dockerfile
    assert 'SETUPTOOLS_SCM_PRETEND_VERSION_FOR_TRIMO="$TRIMO_VERSION"' in dockerfile
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    assert compose["x-app"]["build"]["args"] == {"TRIMO_VERSION": "${TRIMO_VERSION:-}"}
