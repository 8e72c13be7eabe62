"""The agent is an attacker: what it leaves in its workspace never reaches the host.

Each test is an agent script that knows Trimo's layout (the host paths of the
cache, the mirrors and the test's own files) and tries to use the runner, which
runs as root like a default runner, against the host. Every test asserts that
host files are untouched, nothing ran on the host, no host text reached a run
record, and no foreign objects reached any ref.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from runner.delivery import Delivery, RunState, Start
from runner.engine import EngineConfig, RunEngine
from runner.job import Outcome, RunEvent, RunFinished
from runner.pipelinedir import PipelineDir
from tests.conftest import HOST_SECRET, git
from tests.engine_helpers import Recorder, make_request, record_of, run

pytestmark = pytest.mark.docker

T = TypeVar("T")


def snapshot(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def every_text(events: list[RunEvent], finished: RunFinished) -> str:
    return "\n".join(e.model_dump_json() for e in events) + finished.model_dump_json()


def peak_memory(call: Callable[..., T], *args: Any) -> tuple[T, int]:
    """What `call(*args)` returns, and the most memory Python held at once meanwhile."""
    tracemalloc.start()
    try:
        result = call(*args)
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def assert_host_safe(host: Path, before: dict[str, str], text: str) -> None:
    assert snapshot(host) == before, "a host file was changed"
    assert not (host / "pwned").exists(), "a command ran on the host"
    assert HOST_SECRET not in text, "host text reached a run record"


def attack(
    repo: Path, cache: Path, host: Path, script: str, **overrides: Any
) -> tuple[RunFinished, Recorder]:
    """Run the agent `script`; assert the host came through untouched."""
    before = snapshot(host)
    finished, events = run(cache, make_request(repo, script, **overrides))
    assert_host_safe(host, before, every_text(events.events, finished))
    return finished, events


@pytest.mark.parametrize(
    "script",
    [
        "rm .git/config && ln -s {host}/config .git/config",
        "mv .git /tmp/g && ln -s {host} .git; echo x > new.txt",
        "rm -rf .git && echo 'gitdir: {host}/gitdir' > .git; echo x > x.txt",
        "git config core.worktree {host}; echo y > y.txt",
        "git config include.path {host}/config; echo y > y.txt",
        "git config core.sshCommand 'touch {host}/pwned'; echo y > y.txt",
        "git config core.fsmonitor 'touch {host}/pwned'; echo y > y.txt",
        "echo '* filter=evil' > .gitattributes; git config filter.evil.clean 'touch {host}/pwned'",
    ],
    ids=[
        "config-link",
        "gitdir-link",
        "gitfile",
        "worktree",
        "include",
        "ssh",
        "fsmonitor",
        "filter",
    ],
)
def test_planted_links_and_settings_never_reach_the_host(
    sample_repo: Path, cache: Path, host: Path, script: str
) -> None:
    (host / "gitdir").mkdir()
    git(host / "gitdir", "init", "-q", "--bare")
    attack(sample_repo, cache, host, script.format(host=host))


def test_nested_repository_filter_never_runs_on_the_host(
    sample_repo: Path, cache: Path, host: Path
) -> None:
    script = f"""
set -e
mkdir sub && cd sub && git init -q && echo data > f.txt && git add f.txt && git commit -qm sub
git config filter.evil.clean 'touch {host}/pwned; cat'
echo '* filter=evil' > .gitattributes
cd .. && git add sub && git commit -qm 'add nested repo'
touch -d '2001-01-01' sub/f.txt; echo changed >> sub/f.txt
git config filter.evil.clean 'touch {host}/pwned; cat'
echo '* filter=evil' > .gitattributes
"""
    attack(sample_repo, cache, host, script)


def test_linked_reflog_gets_no_attacker_line_on_the_next_run(
    sample_repo: Path, cache: Path, host: Path
) -> None:
    before = snapshot(host)
    first = make_request(
        sample_repo, f"rm -f .git/logs/HEAD && ln -s {host}/profile .git/logs/HEAD"
    )
    finished1, events1 = run(cache, first)
    second = make_request(sample_repo, "true", history=[record_of(first, finished1)])
    finished2, events2 = run(cache, second)
    assert_host_safe(host, before, every_text(events1.events + events2.events, finished2))
    assert finished2.outcome is Outcome.SUCCESS, finished2.reason


@pytest.mark.parametrize("planted", ["packed-refs", "info/grafts", "shallow"])
def test_linked_git_files_never_leak_host_text(
    sample_repo: Path, cache: Path, host: Path, planted: str
) -> None:
    before = snapshot(host)
    script = (
        f"mkdir -p .git/info && rm -f .git/{planted} && ln -s {host}/profile .git/{planted}; "
        "echo more > more.txt"
    )
    first = make_request(sample_repo, script)
    finished1, events1 = run(cache, first)
    second = make_request(
        sample_repo, "cat /trimo/context.md", history=[record_of(first, finished1)]
    )
    finished2, events2 = run(cache, second)
    assert_host_safe(host, before, every_text(events1.events + events2.events, finished2))


def test_another_repositorys_mirror_is_out_of_reach(
    sample_repo: Path, tmp_path: Path, cache: Path, host: Path
) -> None:
    private = tmp_path / "private"
    private.mkdir()
    git(private, "init", "-q", "-b", "main")
    (private / "secret.txt").write_text(f"{HOST_SECRET}\n")
    git(private, "add", "-A")
    git(private, "-c", "user.name=P", "-c", "user.email=p@x", "commit", "-qm", "private")
    private_sha = git(private, "rev-parse", "HEAD")
    finished, _ = run(cache, make_request(private, "true", pipeline="other"))
    assert finished.outcome is Outcome.SUCCESS, finished.reason
    mirror = cache / "mirrors" / f"{hashlib.sha256(str(private).encode()).hexdigest()[:16]}.git"
    assert mirror.is_dir(), "the test's idea of the mirror layout is out of date"
    mirror_config = (mirror / "config").read_bytes()

    script = f"""
rm -rf .git/objects .git/refs
ln -s {mirror}/objects .git/objects
ln -s {mirror}/refs .git/refs
echo 'ref: refs/heads/main' > .git/HEAD
echo work > work.txt
"""
    finished, events = run(cache, make_request(sample_repo, script, pipeline="thief"))
    text = every_text(events.events, finished)
    assert HOST_SECRET not in text and str(mirror) not in text
    assert (mirror / "config").read_bytes() == mirror_config
    found = subprocess_ok(sample_repo, "cat-file", "-e", f"{private_sha}^{{commit}}")
    assert not found, "the private repository's commit reached this repository"


def test_mirror_path_is_invisible_to_the_agent(sample_repo: Path, cache: Path) -> None:
    request = make_request(
        sample_repo, "cat .git/config; git remote -v; env; cat /proc/self/mountinfo"
    )
    _, events = run(cache, request)
    assert str(cache) not in events.text()


def test_pipeline_branches_of_others_are_invisible(sample_repo: Path, cache: Path) -> None:
    run(cache, make_request(sample_repo, "echo a > a && git add a && git commit -qm a", "one"))
    _, events = run(
        cache, make_request(sample_repo, "git for-each-ref; git log --all --oneline", "two")
    )
    assert "trimo/one" not in events.text()


def subprocess_ok(cwd: Path, *args: str) -> bool:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True).returncode == 0


def test_special_files_and_links_in_the_tree(sample_repo: Path, cache: Path, host: Path) -> None:
    script = f"""
ln -s {host}/profile link-to-host
ln -s loop1 loop2; ln -s loop2 loop1
mkfifo fifo
ln README.md hard-link
printf 'x' > "$(printf 'new\\nline')"
printf 'y' > "$(printf 'bad\\xff\\xfename')"
mknod device c 1 3 2>/dev/null; echo mknod=$?
echo ok
"""
    finished, events = attack(sample_repo, cache, host, script)
    assert "mknod=1" in events.text(), "the agent could make a device node"
    assert finished.outcome is Outcome.SUCCESS, finished.reason
    assert git(sample_repo, "show", "trimo/p1:link-to-host") == f"{host}/profile"


def test_a_ref_named_like_the_base_branch_changes_nothing(sample_repo: Path, cache: Path) -> None:
    main_before = git(sample_repo, "rev-parse", "main")
    script = (
        "git checkout -q -b main-evil && echo evil > evil.txt && git add -A && "
        "git commit -qm evil && git update-ref refs/heads/main HEAD && git checkout -q main"
    )
    finished, _ = run(cache, make_request(sample_repo, script))
    assert git(sample_repo, "rev-parse", "main") == main_before
    assert finished.outcome in (Outcome.SUCCESS, Outcome.FAILURE)


def test_many_files_are_saved(sample_repo: Path, cache: Path) -> None:
    script = "mkdir many && cd many && seq 1 100000 | xargs touch"
    finished, _ = run(cache, make_request(sample_repo, script, timeout_s=300))
    assert finished.outcome is Outcome.SUCCESS, finished.reason
    listing = git(sample_repo, "ls-tree", "-r", "--name-only", "trimo/p1", "many/")
    assert len(listing.splitlines()) == 100_000


def test_runner_is_root_like_a_default_runner() -> None:
    assert os.geteuid() == 0, "the adversarial suite must run as root, like a default runner"


def test_disk_is_limited_per_pipeline(sample_repo: Path, tmp_path: Path, test_image: str) -> None:
    engine = RunEngine(EngineConfig(cache_dir=tmp_path / "cache", disk_bytes=64 * 1024 * 1024))
    script = (
        "dd if=/dev/zero of=$HOME/fill bs=1M count=200 2>/dev/null; echo dd=$?; "
        "rm -f $HOME/fill; echo kept > kept.txt"
    )
    recorder = Recorder()
    finished = engine.execute(make_request(sample_repo, script), recorder)
    assert "dd=1" in recorder.text(), "the agent wrote past its disk limit"
    assert finished.outcome is Outcome.SUCCESS, finished.reason
    assert git(sample_repo, "show", "trimo/p1:kept.txt") == "kept"


def test_a_huge_file_never_reaches_the_runners_memory(sample_repo: Path, cache: Path) -> None:
    script = "yes 'a line of text that repeats' | head -c 60000000 > big.txt; echo done"
    (finished, _), peak = peak_memory(run, cache, make_request(sample_repo, script, timeout_s=120))
    assert peak < 20_000_000, f"the runner held {peak} bytes at once for a 60 MB file"
    assert finished.outcome is Outcome.SUCCESS, finished.reason
    [change] = finished.diff.files
    assert change.path == "big.txt" and change.binary  # summarised without reading its text


def test_a_file_over_githubs_limit_is_kept_and_explained(sample_repo: Path, cache: Path) -> None:
    script = "head -c 105000000 /dev/urandom > huge.bin; echo small > small.txt"
    finished, _ = run(cache, make_request(sample_repo, script, timeout_s=120))
    assert finished.outcome is Outcome.FAILURE
    assert "`huge.bin` (100.1 MB)" in finished.reason and "kept on the runner" in finished.reason


@pytest.mark.parametrize("name", ["..", ".", "../x", "a/b", "-rf", "p\n1"])
def test_unsafe_pipeline_names_are_refused(sample_repo: Path, name: str) -> None:
    with pytest.raises(ValueError):
        make_request(sample_repo, "true", pipeline=name)


def test_unsafe_branch_names_are_refused(sample_repo: Path) -> None:
    for branch in ["trimo/../main", "trimo/.x", "x.lock", "a b", "x\x1b[31m", "-x", "a\n"]:
        with pytest.raises(ValueError):
            make_request(sample_repo, "true", branch=branch)


def test_output_without_newlines_never_fills_the_runners_memory(
    sample_repo: Path, cache: Path
) -> None:
    script = "head -c 80000000 /dev/zero | tr '\\0' a; echo; echo after"
    (finished, events), peak = peak_memory(
        run, cache, make_request(sample_repo, script, timeout_s=120)
    )
    assert peak < 20_000_000, f"the runner held {peak} bytes at once for an 80 MB line"
    assert finished.outcome is Outcome.SUCCESS, finished.reason
    texts = [getattr(e, "text", "") for e in events.events]
    assert any(t.endswith("…(line cut)") for t in texts) and "after" in texts


def test_a_destroyed_git_directory_gets_a_fresh_workspace(sample_repo: Path, cache: Path) -> None:
    first = make_request(sample_repo, "echo one > one.txt && git add -A && git commit -qm one")
    finished1, _ = run(cache, first)
    assert finished1.outcome is Outcome.SUCCESS, finished1.reason
    wreck = make_request(
        sample_repo, "rm -rf .git/objects .git/refs; echo junk > .git/HEAD", history=[]
    )
    run(cache, wreck)
    third = make_request(sample_repo, "cat one.txt && echo two > two.txt")
    finished3, events = run(cache, third)
    assert finished3.outcome is Outcome.SUCCESS, finished3.reason
    assert "one" in events.text().splitlines()
    assert git(sample_repo, "show", "trimo/p1:two.txt") == "two"
    assert git(sample_repo, "show", "trimo/p1:one.txt") == "one"


def test_a_claimed_head_from_elsewhere_in_the_mirror_is_ignored(
    sample_repo: Path, tmp_path: Path
) -> None:
    base = git(sample_repo, "rev-parse", "HEAD")
    older = git(sample_repo, "rev-parse", "HEAD~1")
    git(sample_repo, "checkout", "-q", "-b", "other")
    (sample_repo / "other.txt").write_text("another pipeline's work\n")
    git(sample_repo, "add", "-A")
    git(sample_repo, "-c", "user.name=d", "-c", "user.email=d@x", "commit", "-qm", "other")
    foreign = git(sample_repo, "rev-parse", "HEAD")
    pipeline = PipelineDir(tmp_path / "pipeline")
    pipeline.create()
    (tmp_path / "out").mkdir()
    delivery = Delivery(
        make_request(sample_repo, "true"), sample_repo, Start("trimo/p1", base, None),
        pipeline, tmp_path / "out", lambda _e: None, None, RunState(published_sha=None),
    )  # fmt: skip

    def claiming(line: str) -> Callable[[list[str], str | None], None]:
        def export(_known: list[str], _message: str | None) -> None:
            (tmp_path / "out" / "run.bundle.head").write_text(line + "\n")

        return export

    assert delivery.take(claiming(f"head {foreign}"), None) is None
    assert delivery.take(claiming(f"head {base}"), None) == base
    assert delivery.take(claiming(f"head {older}"), None) == older
    assert delivery.take(claiming("head nonsense"), None) is None
