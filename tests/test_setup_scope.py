"""A pipeline's own commits never make the setup entry other pipelines get (real Docker and
git). The cache key holds only the `cache_key` files, but `run` sees the whole checkout:
an agent that changes what `run` executes (its script, a package's install hook) and not
the lockfile would, on a miss, make the entry every run of the repository reuses."""

from __future__ import annotations

from pathlib import Path

from runner.job import Outcome
from runner.setup.spec import SetupSpec
from tests.conftest import git
from tests.engine_helpers import make_request, run
from tests.test_setup_cache import with_lock

SETUP = SetupSpec(run="bash setup.sh", cache_key=["lock.txt"], paths=["deps"])
POISON = (
    "echo 'mkdir -p deps && echo poisoned > deps/tool' > setup.sh"
    " && git commit -qam 'Change what setup runs, not the lockfile'"
)


def test_a_setup_made_from_a_pipelines_commits_is_never_the_repositorys(
    sample_repo: Path, cache: Path
) -> None:
    repo = with_lock(sample_repo, "v1")
    (repo / "setup.sh").write_text("mkdir -p deps && echo clean > deps/tool\n")
    git(repo, "add", "setup.sh")
    git(repo, "commit", "-q", "-m", "setup script")

    first, _ = run(cache, make_request(repo, POISON, pipeline="p1"))
    assert first.outcome is Outcome.SUCCESS, first.reason
    # The repository adds `setup:` (or the image changes): the next run of p1 is a miss, set
    # up on p1's head, whose setup.sh the agent wrote.
    own, seen = run(cache, make_request(repo, "cat deps/tool", pipeline="p1", setup=SETUP))
    assert own.outcome is Outcome.SUCCESS, own.reason
    assert "poisoned" in seen.text(), "the pipeline's own runs get what its commits set up"

    other, seen = run(cache, make_request(repo, "cat deps/tool", pipeline="p2", setup=SETUP))
    assert other.outcome is Outcome.SUCCESS, other.reason
    assert "poisoned" not in seen.text(), "another pipeline got p1's setup"
    assert "clean" in seen.text()
