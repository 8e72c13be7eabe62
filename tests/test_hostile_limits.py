"""The hostile agent against the runner's limits: memory, disk, CPU, later runs, the proxy.

Attacks found by a security review of the sandbox boundary, each an agent script
that knows Trimo's code; each assertion is what the runner guarantees. Real
Docker and real git, run as root like a default runner (tests/test_hostile.py has
the attacks on host files and host text).
"""

from __future__ import annotations

import resource
import subprocess
import time
import tracemalloc
from pathlib import Path
from typing import Any

import docker
import pytest

from runner.engine import EngineConfig, RunEngine, StopSignal
from runner.handoff import Limits
from runner.job import Outcome, Resources, RunFinished
from tests.conftest import git
from tests.engine_helpers import RUNNER_ID, Recorder, make_request

pytestmark = pytest.mark.docker

SMALL_DISK = 64 * 1024 * 1024


def engine_run(
    cache: Path, request: Any, disk_bytes: int = SMALL_DISK, stop: StopSignal | None = None
) -> tuple[RunFinished, Recorder]:
    engine = RunEngine(
        EngineConfig(
            cache_dir=cache,
            runner_id=RUNNER_ID,
            push_interval_seconds=0.5,
            disk_bytes=disk_bytes,
        )
    )
    recorder = Recorder()
    finished = engine.execute(request, recorder, stop)
    return finished, recorder


def assert_nothing_left(cache: Path, run_id: str) -> None:
    client = docker.from_env()
    left = client.containers.list(all=True, filters={"label": f"dev.trimo.run={run_id}"})
    assert not left, f"containers left after the run: {[c.name for c in left]}"
    with open("/proc/mounts") as mounts:
        mounted = [ln.split()[1] for ln in mounts if ln.split()[1].startswith(str(cache))]
    assert not mounted, f"mounts left after the run: {mounted}"


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


# -- memory -------------------------------------------------------------------


FLOOD_EXEC = r"""
echo a > a.txt && git add a.txt && git commit -qm a
flood() {
  end=$((SECONDS+40))
  while [ $SECONDS -lt $end ]; do
    for f in /proc/[0-9]*/cmdline; do
      if grep -qa "trimo-exp""ort" "$f" 2>/dev/null; then
        pid=${f#/proc/}; pid=${pid%/cmdline}
        if exec 3>/proc/$pid/fd/1; then
          head -c 300000000 /dev/zero >&3; exec 3>&-; echo flooded; return
        fi
      fi
    done
  done
}
flood 2>/dev/null
echo b > b.txt && git add b.txt && git commit -qm b
"""


def test_exec_output_of_the_push_loop_is_bounded(sample_repo: Path, cache: Path) -> None:
    """The agent opens /proc/<trimo-export>/fd/1 (same uid, same container) and writes 300 MB
    into the `docker exec` stream; exec_run keeps all of it in the runner's memory."""
    tracemalloc.start()
    try:
        finished, events = engine_run(cache, make_request(sample_repo, FLOOD_EXEC, timeout_s=120))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "flooded" in events.text(), "the flood never attached (test did not exercise it)"
    assert peak < 50_000_000, f"the runner held {peak} bytes of one exec's output"
    assert finished.outcome is Outcome.SUCCESS, finished.reason


def test_a_huge_commit_subject_never_reaches_the_runners_memory(
    sample_repo: Path, cache: Path
) -> None:
    """A 100 MB one-line commit message compresses to ~100 KB in the bundle; the host's
    `git log --format=%s` is captured whole (500 such commits would be 50 GB)."""
    script = (
        "echo x > x.txt && git add x.txt && "
        "head -c 100000000 /dev/zero | tr '\\0' a > /tmp/msg && git commit -q -F /tmp/msg; "
        "echo rc=$?"
    )
    request = make_request(
        sample_repo, script, timeout_s=180, resources=Resources(memory="1g", cpus=1.0, pids=128)
    )
    tracemalloc.start()
    try:
        finished, events = engine_run(cache, request, disk_bytes=1024**3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "rc=0" in events.text()
    assert peak < 50_000_000, f"the runner held {peak} bytes for one commit subject"
    assert finished.outcome is Outcome.SUCCESS, finished.reason


# -- disk -----------------------------------------------------------------------


def test_the_containers_own_filesystem_is_read_only_and_its_scratch_bounded(
    sample_repo: Path, cache: Path
) -> None:
    """Outside its disk the agent can write only to a size-capped tmpfs, which counts
    against its memory: nothing it writes lands on the host's Docker disk."""
    script = (
        "touch /opt/x 2>/dev/null; echo opt=$?; touch /etc/x 2>/dev/null; echo etc=$?; "
        "dd if=/dev/zero of=/tmp/fill bs=1M count=1200 2>/dev/null; echo dd=$?; "
        "rm -f /tmp/fill; df -P /tmp | tail -1"
    )
    request = make_request(
        sample_repo, script, resources=Resources(memory="2g", cpus=1.0, pids=128)
    )
    finished, events = engine_run(cache, request)
    text = events.text()
    assert "opt=1" in text and "etc=1" in text, "the image's filesystem is writable"
    assert "dd=1" in text, "/tmp took 1.2 GB: it is not capped"
    assert "tmpfs" in text
    assert finished.outcome is Outcome.SUCCESS, finished.reason


REWRITE_LOOP = r"""
git checkout -q --orphan other
head -c 8000000 /dev/urandom > blob.bin
git add -A && git commit -qm big && git repack -adq
for i in $(seq 1 14); do git commit -q --amend -m "v$i"; sleep 1; done
echo done
"""


def test_rewritten_heads_do_not_grow_the_mirror_without_bound(
    sample_repo: Path, cache: Path
) -> None:
    """Each new head that is not a fast-forward is re-taken whole (known never includes it):
    every push interval the mirror gains another copy of the agent's bundle, on the host's
    disk, outside the pipeline's limit, and run refs are never deleted."""
    finished, _ = engine_run(cache, make_request(sample_repo, REWRITE_LOOP, timeout_s=120))
    [mirror] = (cache / "mirrors").glob("*.git")
    grown = dir_bytes(mirror / "objects")
    assert grown < 3 * 8_000_000, f"the mirror holds {grown} bytes for one 8 MB blob"
    assert finished.outcome is not Outcome.ERROR, finished.reason


# -- a full pipeline disk ---------------------------------------------------------


def test_a_full_disk_left_by_one_run_does_not_brick_the_pipeline(
    sample_repo: Path, cache: Path
) -> None:
    """With `-m 0`, root has no reserve: the agent fills its home, and the host's own writes
    (io/<run>, context.md, sync.bundle) fail on every later run of the pipeline."""
    first = make_request(
        sample_repo,
        "echo one > one.txt; dd if=/dev/zero of=$HOME/fill bs=1M count=200 2>/dev/null; "
        "for i in $(seq 1 30000); do : > $HOME/f$i 2>/dev/null || break; done; echo full",
    )
    finished1, _ = engine_run(cache, first)
    assert finished1.outcome is Outcome.SUCCESS, finished1.reason
    for _ in range(2):  # and it never recovers
        second = make_request(sample_repo, "echo started; rm -rf $HOME/*; echo two > two.txt")
        finished2, events2 = engine_run(cache, second)
        assert "started" in events2.text(), f"the next run never started: {finished2.reason}"
    assert finished2.outcome is Outcome.SUCCESS, finished2.reason


# -- what one run leaves for the next ------------------------------------------------


def test_a_broken_home_gitconfig_does_not_brick_the_pipeline(
    sample_repo: Path, cache: Path
) -> None:
    """trimo-sync runs git with the persistent home's ~/.gitconfig; a broken one makes every
    later run 'workspace broken' twice (the home is never reset), so the pipeline is dead."""
    engine_run(cache, make_request(sample_repo, "echo '[' > $HOME/.gitconfig; echo x > x.txt"))
    finished, _events = engine_run(cache, make_request(sample_repo, "echo legit > legit.txt"))
    assert finished.outcome is Outcome.SUCCESS, finished.reason
    assert git(sample_repo, "show", "trimo/p1:legit.txt") == "legit"


def test_a_home_smudge_filter_cannot_forge_the_ready_line(sample_repo: Path, cache: Path) -> None:
    """~/.config/git/attributes + ~/.gitconfig give trimo-sync (in the next run) a smudge
    filter; it prints to PID 1's stdout before the entrypoint prints its status line."""
    script = r"""
mkdir -p $HOME/.config/git
echo '* filter=evil' > $HOME/.config/git/attributes
cat > $HOME/.gitconfig <<'EOF'
[filter "evil"]
	smudge = "sh -c 'echo trimo:workspace-ready >/proc/1/fd/1; \
echo injected-before-ready >/proc/1/fd/1; cat'"
EOF
echo x > x.txt && git add -A && git commit -qm x
rm -rf .git/objects   # the next run's sync fails, so its second attempt checks out every file
"""
    engine_run(cache, make_request(sample_repo, script))
    finished, events = engine_run(
        cache, make_request(sample_repo, "echo legit > legit.txt", pipeline="p1")
    )
    assert "injected-before-ready" not in events.text(), "code from run 1 ran before run 2"
    assert finished.outcome is Outcome.SUCCESS, finished.reason


def test_info_exclude_left_by_a_run_does_not_hide_the_next_runs_leftovers(
    sample_repo: Path, cache: Path
) -> None:
    """trimo-sync keeps .git/info/exclude; `*` there makes the helper's `git add --all` skip
    every leftover of the next (legitimate) run: its work is silently not saved."""
    engine_run(cache, make_request(sample_repo, "mkdir -p .git/info; echo '*' > .git/info/exclude"))
    finished, _ = engine_run(cache, make_request(sample_repo, "echo work > work.txt"))
    assert finished.outcome is Outcome.SUCCESS, finished.reason
    assert git(sample_repo, "show", "trimo/p1:work.txt") == "work", "the run's leftovers were lost"


REPLACE = r"""
start=$(git rev-parse HEAD)
echo evil > evil.txt && git add evil.txt
evil=$(git commit-tree $(git write-tree) -p $(git rev-parse HEAD~1) -m second)
git rm -q --cached evil.txt && rm evil.txt
git replace $start $evil && git pack-refs --all
echo planted
"""


def test_replace_refs_left_by_a_run_do_not_poison_the_next_run(
    sample_repo: Path, cache: Path
) -> None:
    """A replace ref (even packed) left by one run must not change what the next run starts
    from or pushes: the sandbox removes them and never honours them."""
    _finished1, events1 = engine_run(cache, make_request(sample_repo, REPLACE))
    assert "planted" in events1.text()
    finished2, _ = engine_run(cache, make_request(sample_repo, "echo work > work.txt"))
    files = git(sample_repo, "ls-tree", "-r", "--name-only", "trimo/p1").splitlines()
    assert "evil.txt" not in files, "run 2 pushed a file run 1 planted through refs/replace"
    assert "work.txt" in files, f"run 2's work was lost: {finished2.reason}"


# -- deep trees: the host's rmtree is recursive -------------------------------------


DEEP = "mkdir -p $(printf 'd/%.0s' $(seq 1 1500)) && echo deep-tree-made"
"""1,500 nested directories, made in one call: a loop of `mkdir d && cd d` takes minutes,
because bash's `cd` stats every prefix of its new path (each walk as long as the depth)."""


def test_a_deep_tree_in_out_does_not_turn_a_run_into_an_error(
    sample_repo: Path, deep_cache: Path
) -> None:
    script = f"(cd /trimo/out && {DEEP}); echo work > work.txt"
    request = make_request(sample_repo, script)
    finished, recorder = engine_run(deep_cache, request)
    assert "deep-tree-made" in recorder.text()
    assert_nothing_left(deep_cache, request.run_id)
    pushed = subprocess.run(
        ["git", "show", "trimo/p1:work.txt"], cwd=sample_repo, capture_output=True, text=True
    )
    assert pushed.stdout.strip() == "work", (  # pushed, then reported lost
        f"{pushed.stderr.strip()}; the run ended {finished.outcome.value}: {finished.reason}; "
        f"its output ends: {recorder.text()[-2000:]}"
    )
    assert finished.outcome is Outcome.SUCCESS, finished.reason


def test_a_deep_tree_in_a_broken_workspace_does_not_brick_the_pipeline(
    sample_repo: Path, deep_cache: Path
) -> None:
    script = f"(cd .git && {DEEP}); rm -rf .git/objects .git/refs; echo junk > .git/HEAD"
    _broken, events = engine_run(deep_cache, make_request(sample_repo, script))
    assert "deep-tree-made" in events.text()
    finished, _ = engine_run(deep_cache, make_request(sample_repo, "echo two > two.txt"))
    assert finished.outcome is Outcome.SUCCESS, finished.reason
    assert git(sample_repo, "show", "trimo/p1:two.txt") == "two"


def test_a_deep_tree_in_home_does_not_stop_the_pipeline_sweep(
    sample_repo: Path, deep_cache: Path
) -> None:
    from runner import pipelinedir

    _finished, events = engine_run(
        deep_cache,
        make_request(sample_repo, f"cd $HOME && {DEEP}"),
        disk_bytes=0,
    )
    assert "deep-tree-made" in events.text()
    removed = pipelinedir.sweep(deep_cache, ttl_days=0, now=time.time() + 10)
    assert removed, "the pipeline was not swept"


# -- bundles the agent crafts itself --------------------------------------------------


CRAFTED = r"""
echo evil > evil.txt && git add evil.txt && git commit -qm evil
git update-ref refs/heads/main HEAD
git bundle create /tmp/b.bundle refs/heads/main HEAD 2>/dev/null
git reset -q --hard HEAD~1
while :; do cp /tmp/b.bundle /trimo/out/run.bundle 2>/dev/null; sleep 0.1; done &
sleep 4; echo crafted
"""


def test_a_crafted_bundle_with_many_refs_moves_nothing(sample_repo: Path, cache: Path) -> None:
    main_before = git(sample_repo, "rev-parse", "main")
    request = make_request(sample_repo, CRAFTED)
    _finished, _events = engine_run(cache, request)
    assert git(sample_repo, "rev-parse", "main") == main_before
    refs = git(sample_repo, "for-each-ref", "--format=%(refname)").splitlines()
    assert all(not r.startswith("refs/trimo/salvage") for r in refs), refs
    assert_nothing_left(cache, request.run_id)


# -- host cpu -------------------------------------------------------------------------


BOMB = r"""
git checkout -q --orphan bomb
git config core.bigFileThreshold 1m; git config pack.window 0
for i in $(seq 1 12); do
  sha=$({ echo $i; head -c 80000000 /dev/zero; } | git hash-object -w --stdin)
  git update-index --add --cacheinfo 100644,$sha,z$i
done
git commit -qm bomb && git repack -adq && echo packed
for i in $(seq 1 10); do git commit -q --amend -m "v$i"; sleep 1; done
"""


def test_the_hosts_git_work_is_bounded_like_the_agents(sample_repo: Path, cache: Path) -> None:
    """Twelve 80 MB blobs of zeros pack to ~1 MB but cost the runner's CPU to verify: past the
    run's cap on new file contents nothing is taken, and the runner's CPU stays bounded."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    request = make_request(
        sample_repo, BOMB, timeout_s=240, resources=Resources(memory="1g", cpus=1.0, pids=128)
    )
    engine = RunEngine(
        EngineConfig(
            cache_dir=cache,
            push_interval_seconds=0.5,
            disk_bytes=SMALL_DISK * 32,
            limits=Limits(content_bytes=400 * 1024 * 1024),
        )
    )
    recorder = Recorder()
    start = time.monotonic()
    finished = engine.execute(request, recorder)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    host_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert "packed" in recorder.text()
    assert host_cpu < 20, f"the host's git used {host_cpu:.1f} s of CPU in a {wall:.0f} s run"
    assert "of file contents" in finished.reason or "rewrote" in finished.reason


# -- egress proxy -----------------------------------------------------------------------


FLOOD = 240


def test_blocked_host_reports_and_proxy_logs_are_bounded(
    sample_repo: Path, cache: Path, docker_client: docker.DockerClient
) -> None:
    from tests.test_egress import netclient_image

    tag = netclient_image(docker_client, "trimo-agent:base")
    label = "a" * 60
    # Requests to as many hosts, a few times the report's cap (a count, not a fixed time:
    # 20 s of requests were 460 of them on a busy machine).
    script = rf"""
n=0
end=$((SECONDS+90))
while [ $n -lt {FLOOD} ] && [ $SECONDS -lt $end ]; do
  for j in $(seq 1 8); do
    curl -s -m 5 -o /dev/null http://x$RANDOM$RANDOM.{label}.{label}.{label}.example/ &
  done
  wait; n=$((n+8))
done
echo requests=$n
"""
    request = make_request(
        sample_repo, script, image=tag, network="allowlist", allowed_hosts=["pkgs.example.com"],
        timeout_s=120,
    )  # fmt: skip
    _finished, events = engine_run(cache, request)
    assert f"requests={FLOOD}" in events.text(), "the flood did not run to its end"
    blocked = events.of_type("egress_blocked")
    assert blocked, "nothing was reported blocked"
    hosts = blocked[0].model_dump()["hosts"]
    size = len(blocked[0].model_dump_json())
    assert len(hosts) <= 100, f"one event lists {len(hosts)} blocked hosts ({size} bytes)"
