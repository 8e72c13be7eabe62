"""`runner.keeper` on real git and a real Redis, without Docker: the replay is a stand-in.

The whole loop (real sandbox replays, the stand-in's git server) is in test_kept_work.py;
these are the paths it cannot reach cheaply: kept commits on two runners at once, a set
another runner already set aside, and nowhere left to keep them but the runner.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from runner import contract, gitops
from runner.delivery import pending_ref
from runner.handoff import Limits
from runner.job import Kept, RunEvent
from runner.keeper import Keeper, Replay
from runner.kept import KeptRecord, kept_local_ref
from runner.keptstore import KeptStore
from runner.pipelinedir import PipelineDir
from runner.replay import ReplayFailed
from tests.conftest import git
from tests.engine_helpers import make_request

PIPELINE = "acme.widgets.7"
BRANCH = "trimo/7"
KEPT_BRANCH = f"trimo/{PIPELINE}-kept-1"
NO_PUSH = "http://127.0.0.1:1/acme/widgets.git"
"""Where pushes go when the remote takes none (the mirror was made from the real one)."""


@dataclass
class World:
    tmp: Path
    remote: Path
    store: KeptStore
    events: list[RunEvent] = field(default_factory=list)

    @property
    def mirror(self) -> Path:
        return gitops.ensure_mirror(self.tmp / "mirrors", str(self.remote))

    def commit(self, name: str, text: str, on: str = BRANCH, push: bool = False) -> str:
        """A commit on `on`, pushed to the remote (a person) or only in the mirror's pending
        ref (a run's kept commit)."""
        work = self.tmp / f"work-{name}"
        subprocess.run(["git", "clone", "-q", "-b", on, str(self.remote), str(work)], check=True)
        (work / name).write_text(text)
        git(work, "add", "-A")
        git(work, "-c", "user.name=T", "-c", "user.email=t@example.com", "commit", "-qm", name)
        if push:
            git(work, "push", "-q", "origin", on)
        else:
            git(self.mirror, "fetch", "-q", str(work), f"+HEAD:{pending_ref(PIPELINE)}")
        return git(work, "rev-parse", "HEAD")

    def keeper(
        self, replay: Replay | None = None, store: KeptStore | None = None, push_to: str = ""
    ) -> Keeper:
        def conflict(*_args: str) -> str | None:
            return None

        pipeline = PipelineDir(self.tmp / "pipeline")
        pipeline.create()
        request = make_request(self.remote, "go", pipeline=PIPELINE, branch=BRANCH)
        if push_to:
            repo = request.repo.model_copy(update={"clone_url": push_to})
            request = request.model_copy(update={"repo": repo})
        return Keeper(
            request, self.mirror, pipeline, store or self.store, self.events.append, None,
            "runner-a", replay or conflict, Limits(),
        )  # fmt: skip

    def kept(self) -> list[Kept]:
        return [e for e in self.events if isinstance(e, Kept)]


@pytest.fixture
def world(tmp_path: Path, sample_repo: Path, redis_url: str) -> Iterator[World]:
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(sample_repo), str(remote)], check=True)
    git(remote, "branch", BRANCH, "main")
    client = redis.Redis.from_url(redis_url)
    yield World(tmp_path, remote, KeptStore(client, 1 << 20))
    client.close()


def test_nowhere_left_but_the_runner_keeps_them_there_and_says_so(world: World) -> None:
    kept = world.commit("agent.txt", "agent\n")
    world.commit("person.txt", "person\n", push=True)
    too_small = KeptStore(world.store.redis, 10)
    keeper = world.keeper(store=too_small, push_to=NO_PUSH)

    keeper.restore()

    (told,) = world.kept()
    assert (told.action, told.why, told.ref) == ("runner", "conflict", kept_local_ref(PIPELINE, 1))
    assert "could not push" in told.refused and "TRIMO_KEPT_MAX" in told.unstored
    assert gitops.resolve(keeper.mirror, told.ref) == kept
    assert gitops.resolve(keeper.mirror, pending_ref(PIPELINE)) is None
    assert gitops.branch_sha(world.remote, KEPT_BRANCH) is None


def test_a_replay_that_cannot_run_sets_them_aside_on_a_branch(world: World) -> None:
    def broken(*_args: str) -> str | None:
        raise ReplayFailed("its sandbox could not run (DockerException)")

    kept = world.commit("agent.txt", "agent\n")
    world.commit("person.txt", "person\n", push=True)

    world.keeper(replay=broken).restore()

    (told,) = world.kept()
    assert (told.action, told.why, told.branch) == ("branch", "replay_failed", KEPT_BRANCH)
    assert "DockerException" in told.problem
    assert gitops.branch_sha(world.remote, KEPT_BRANCH) == kept
    (entry,) = world.store.entries(PIPELINE)
    assert (entry.id, entry.head, entry.branch) == ("kept-1", kept, KEPT_BRANCH)


def test_commits_kept_here_beside_newer_stored_ones_are_set_aside_not_lost(
    world: World,
) -> None:
    published = gitops.branch_sha(world.remote, BRANCH)
    assert published is not None
    newer = world.commit("b.txt", "from runner b\n")  # what runner B kept and stored
    bundle = world.tmp / "b.bundle"
    git(world.mirror, "bundle", "create", "-q", str(bundle), pending_ref(PIPELINE), f"^{published}")
    world.store.put(
        KeptRecord(
            id=contract.KEPT_PENDING, pipeline=PIPELINE, clone_url=str(world.remote),
            run_id="run-b", reason="refused", head=newer, base=published, count=1,
        ),
        bundle,
    )  # fmt: skip
    git(world.mirror, "update-ref", "-d", "--no-deref", pending_ref(PIPELINE))
    git(world.mirror, "reflog", "expire", "--expire=now", "--all")
    git(world.mirror, "gc", "-q", "--prune=now")
    assert gitops.resolve(world.mirror, newer) is None
    here = world.commit("a.txt", "only on runner a\n")

    keeper = world.keeper()
    keeper.restore()

    aside, continued = world.kept()
    assert (aside.action, aside.why, aside.sha) == ("branch", "beside_newer", here)
    assert gitops.branch_sha(world.remote, KEPT_BRANCH) == here
    assert (continued.action, continued.kept_by, continued.sha) == ("continued", "run-b", newer)
    assert gitops.resolve(keeper.mirror, pending_ref(PIPELINE)) == newer


def test_commits_another_runner_set_aside_are_not_set_aside_again(world: World) -> None:
    kept = world.commit("agent.txt", "agent\n")
    world.store.put(
        KeptRecord(
            id="kept-1", pipeline=PIPELINE, clone_url=str(world.remote), head=kept,
            base="0" * 40, count=1, reason="", branch=KEPT_BRANCH,
        ),
        None,
    )  # fmt: skip
    world.commit("person.txt", "person\n", push=True)
    keeper = world.keeper()

    keeper.restore()

    assert world.kept() == [] and gitops.resolve(keeper.mirror, pending_ref(PIPELINE)) is None
    assert [e.id for e in world.store.entries(PIPELINE)] == ["kept-1"]


def test_share_stores_what_the_remote_lacks_and_forgets_it_once_pushed(world: World) -> None:
    published = gitops.branch_sha(world.remote, BRANCH)
    assert published is not None
    kept = world.commit("agent.txt", "agent\n")
    keeper = world.keeper()

    assert keeper.share(published, "the repository refused commit abc: no") == ""
    stored = world.store.get(PIPELINE, contract.KEPT_PENDING)
    assert stored is not None and (stored.head, stored.base, stored.count) == (kept, published, 1)
    assert stored.run_id == keeper.request.run_id and stored.commits[0].subject == "agent.txt"

    git(keeper.mirror, "push", "-q", str(world.remote), f"{kept}:refs/heads/{BRANCH}")
    assert keeper.share(kept, "") == ""
    assert world.store.entries(PIPELINE) == []
    assert gitops.resolve(keeper.mirror, pending_ref(PIPELINE)) is None


def test_share_says_when_the_store_cannot_keep_them(world: World) -> None:
    published = gitops.branch_sha(world.remote, BRANCH)
    assert published is not None
    world.commit("agent.txt", "agent\n")
    keeper = world.keeper(store=KeptStore(world.store.redis, 10))

    words = keeper.share(published, "refused")

    assert "TRIMO_KEPT_MAX" in words and "only on runner runner-a" in words
    assert gitops.resolve(keeper.mirror, pending_ref(PIPELINE)) is not None
