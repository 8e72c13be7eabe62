"""The setup cache with real Docker and git: a hit restores the kept paths without running
setup again, a changed lockfile misses, and an agent that writes into the cached paths
(the poisoning attack) changes only its own run's layer, never the entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.job import Outcome
from runner.setup.spec import SetupSpec
from tests.conftest import git
from tests.engine_helpers import make_request, run

SETUP = SetupSpec(
    run=(
        "mkdir -p deps/pkg ~/.tool && cat lock.txt > deps/pkg/version"
        " && (head -c 12 /proc/sys/kernel/random/uuid; echo) > deps/pkg/made"
        " && echo made > ~/.tool/x"
    ),
    cache_key=["lock.txt"],
    paths=["deps", "~/.tool"],
)
SHOW = "cat deps/pkg/version deps/pkg/made ~/.tool/x; ls -ld deps | cut -c1-10"


def with_lock(repo: Path, text: str) -> Path:
    (repo / "lock.txt").write_text(f"{text}\n")
    (repo / ".gitignore").write_text("deps/\nnode_modules/\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"lock {text}")
    return repo


def lines(recorder_text: str) -> list[str]:
    return [line for line in recorder_text.splitlines() if line.strip()]


def test_a_hit_restores_the_paths_and_does_not_run_setup_again(
    sample_repo: Path, cache: Path
) -> None:
    repo = with_lock(sample_repo, "v1")
    first, one = run(cache, make_request(repo, SHOW, "p1", setup=SETUP))
    second, two = run(cache, make_request(repo, SHOW, "p2", setup=SETUP))
    assert first.outcome is Outcome.SUCCESS, (first.reason, one.text())
    assert second.outcome is Outcome.SUCCESS, (second.reason, two.text())
    made = lines(one.text())
    assert made[0] == "v1" and made[2:] == ["made", "drwxr-xr-x"], made
    assert lines(two.text()) == made  # the same entry: setup's own random stamp


def test_a_changed_lockfile_misses(sample_repo: Path, cache: Path) -> None:
    repo = with_lock(sample_repo, "v1")
    _, one = run(cache, make_request(repo, SHOW, "p1", setup=SETUP))
    with_lock(repo, "v2")
    finished, two = run(cache, make_request(repo, SHOW, "p2", setup=SETUP))
    assert finished.outcome is Outcome.SUCCESS, (finished.reason, two.text())
    assert lines(two.text())[0] == "v2"
    assert lines(two.text())[1] != lines(one.text())[1]


POISON = (
    "echo poisoned > deps/pkg/version; rm deps/pkg/made; echo evil > deps/pkg/new;"
    " echo evil > ~/.tool/x; chmod 777 deps; " + SHOW
)


@pytest.mark.parametrize("disk_bytes", [10 * 1024**3, 0], ids=["image", "no-disk"])
def test_an_agent_writing_into_the_cached_paths_never_changes_the_entry(
    sample_repo: Path, cache: Path, disk_bytes: int
) -> None:
    repo = with_lock(sample_repo, "v1")
    _, clean = run(cache, make_request(repo, SHOW, "p1", setup=SETUP), disk_bytes=disk_bytes)
    poisoner, attack = run(
        cache, make_request(repo, POISON, "p2", setup=SETUP), disk_bytes=disk_bytes
    )
    assert poisoner.outcome is Outcome.SUCCESS, (poisoner.reason, attack.text())
    assert {"poisoned", "evil"} <= set(lines(attack.text()))  # its own view did change
    again, later = run(
        cache, make_request(repo, SHOW + "; ls deps/pkg", "p3", setup=SETUP), disk_bytes=disk_bytes
    )
    assert again.outcome is Outcome.SUCCESS, (again.reason, later.text())
    assert lines(later.text())[:4] == lines(clean.text())
    assert "new" not in lines(later.text())[4:]


DEEP_SETUP = SetupSpec(
    run="mkdir -p deps/$(printf 'd/%.0s' $(seq 1 1500)) && echo deep > deps/top",
    cache_key=["lock.txt"],
    paths=["deps"],
)


@pytest.mark.parametrize("disk_bytes", [10 * 1024**3, 0], ids=["image", "no-disk"])
def test_a_deep_tree_in_the_cached_paths_is_kept_like_any_other(
    sample_repo: Path, deep_cache: Path, disk_bytes: int
) -> None:
    """Without a disk image the entry's files lie on the host, and its size was counted
    with os.walk, which recurses: 1,500 nested directories failed every run of the
    repository inside Trimo, and left the half-made entry behind each time."""
    repo = with_lock(sample_repo, "v1")
    request = make_request(repo, "cat deps/top", "p1", setup=DEEP_SETUP)
    finished, recorder = run(deep_cache, request, disk_bytes=disk_bytes)
    assert finished.outcome is Outcome.SUCCESS, (finished.reason, recorder.text())
    assert "deep" in lines(recorder.text())
    assert not list((deep_cache / "setup" / ".staging").glob("*/*")), "a half-made entry was left"
