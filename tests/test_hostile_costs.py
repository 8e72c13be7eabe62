"""The hostile agent against what it makes the host pay: git on its objects.

An agent can describe ten million files in a few kilobytes of objects (one subtree
repeated). Whatever it does, the runner's git children stay within their time and
memory, and the summary says the diff is too large instead of hanging. Real Docker and
git, run as root like a default runner.
"""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from runner.engine import EngineConfig, RunEngine
from runner.job import Outcome, Resources
from tests.conftest import git
from tests.engine_helpers import RUNNER_ID, Recorder, make_request
from tests.procwatch import ChildPeak

pytestmark = pytest.mark.docker

MB = 1024 * 1024

# -- tree bomb ----------------------------------------------------------------------------

LEVELS = 7
TREE_BOMB = rf"""
blob=$(echo bomb | git hash-object -w --stdin)
tree=$(for i in 0 1 2 3 4 5 6 7 8 9; do printf '100644 blob %s\tf%d\n' $blob $i; done | git mktree)
for level in $(seq 2 {LEVELS}); do
  tree=$(for i in 0 1 2 3 4 5 6 7 8 9; do printf '040000 tree %s\td%d\n' $tree $i; done \
    | git mktree)
done
root=$({{ git ls-tree HEAD; printf '040000 tree %s\tbomb\n' $tree; }} | git mktree)
commit=$(git commit-tree $root -p HEAD -m bomb)
git reset -q --soft $commit
echo "bomb=$commit"
"""


def test_a_tree_bomb_costs_the_host_little_and_is_still_pushed(
    sample_repo: Path, cache: Path
) -> None:
    """A few objects name 10**7 files. The host's `git diff -M` in the summary used to hold
    all of them (3.4 GB and 7 s of CPU here); now the summary counts them from the trees,
    says they are too many to list, and the run's commit is pushed all the same."""
    request = make_request(
        sample_repo, TREE_BOMB, timeout_s=300, resources=Resources(memory="256m", pids=128)
    )
    engine = RunEngine(EngineConfig(cache_dir=cache, runner_id=RUNNER_ID, push_interval_seconds=1))
    recorder = Recorder()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with ChildPeak() as children:
        finished = engine.execute(request, recorder)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    host_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    bomb = next(ln for ln in recorder.text().splitlines() if ln.startswith("bomb="))[5:]
    assert git(sample_repo, "rev-parse", "trimo/p1") == bomb, "the run's commit was not pushed"
    assert finished.outcome is Outcome.SUCCESS, finished.reason
    assert finished.diff.files_changed == 10**LEVELS
    assert not finished.diff.files, "the summary listed files of a diff too large to list"
    assert children.peak < 300 * MB, (
        f"a host child ({children.peak_name}) reached {children.peak // MB} MB"
    )
    assert host_cpu < 5, f"the host's children used {host_cpu:.1f} s of CPU"
