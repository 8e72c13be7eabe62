"""`trimo run` sets up with the repository's own `setup:` (on the base branch), as the App's
runs do; `--no-setup` skips it, and a broken section is a clear refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_cli import trimo
from tests.test_setup_cache import with_lock
from tests.test_verify_cli import with_config

CONFIG = """\
agent: script
setup:
  run: mkdir -p deps && cat lock.txt > deps/version
  cache_key: [lock.txt]
  paths: [deps]
"""
SHOW = "cat deps/version || echo no-setup"


@pytest.mark.docker
def test_trimo_run_sets_up_and_no_setup_skips(
    sample_repo: Path, tmp_path: Path, test_image: str
) -> None:
    with_lock(sample_repo, "v1")
    with_config(sample_repo, CONFIG)
    cache = tmp_path / "cache"
    made = trimo("run", "--repo", str(sample_repo), "--pipeline", "deps", SHOW, cache=cache)
    assert made.returncode == 0, made.stdout + made.stderr
    assert (
        "v1" in [line.strip() for line in made.stdout.splitlines()]
        and "no-setup" not in made.stdout
    ), made.stdout
    assert len(list((cache / "setup").glob("*/*/size"))) == 1, list((cache / "setup").rglob("*"))

    skipped = trimo(
        "run", "--repo", str(sample_repo), "--pipeline", "bare", "--no-setup", SHOW, cache=cache
    )
    assert skipped.returncode == 0, skipped.stdout + skipped.stderr
    assert "no-setup" in skipped.stdout, skipped.stdout


@pytest.mark.parametrize(
    ("section", "says"),
    [
        ("setup: {run: x}", "setup.paths"),
        ("setup: {run: x, paths: [../up]}", "setup.paths.0"),
        ("setup: {run: x, paths: [a], allowed_hosts: ['*']}", "setup.allowed_hosts.0"),
        ("setup: [", "has a problem in its setup"),
    ],
)
def test_a_broken_setup_section_is_a_clear_refusal(
    sample_repo: Path, tmp_path: Path, section: str, says: str
) -> None:
    with_config(sample_repo, f"{section}\n")
    result = trimo("run", "--repo", str(sample_repo), "--no-verify", "echo", cache=tmp_path / "c")
    said = result.stdout + result.stderr
    assert result.returncode != 0
    assert says in said and "--no-setup" in said and "Traceback" not in said, said
