"""Kept work belongs to the pipeline, not to a machine.

Real Docker, Redis, git and the stand-in's git server (its `git_push_outage` mode takes
no push). Runners A and B are two engines with caches of their own on one Redis. Before
this, commits a refused push kept lived only in runner A's mirror: a next run on B
started without them, and a person's push in between made the next run delete them.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr

from runner import contract, gitops
from runner.delivery import pending_ref
from runner.engine import EngineConfig, RunEngine
from runner.job import Kept, Outcome, RunFinished, RunRequest
from runner.keptstore import KeptStore
from tests.conftest import unique
from tests.engine_helpers import Recorder, remote_request
from tests.fakegithub.runner import RunningFakeGitHub

pytestmark = pytest.mark.docker

OWNER, REPO = "acme", "widgets"
PIPELINE = f"{OWNER}.{REPO}.7"
BRANCH = "trimo/7-keep"
KEPT_BRANCH = f"trimo/{PIPELINE}-kept-1"
COMMIT = "echo one > one.txt && git add one.txt && git commit -qm 'First step'"


@pytest.fixture
def gh() -> Iterator[RunningFakeGitHub]:
    with RunningFakeGitHub() as running:
        running.install_app(OWNER)
        running.create_repo(OWNER, REPO, {"README.md": "# widgets\n", "shared.txt": "base\n"})
        yield running


@pytest.fixture
def store(redis_url: str) -> Iterator[KeptStore]:
    client = redis.Redis.from_url(redis_url)
    yield KeptStore(client, 200 * 1024 * 1024)
    client.close()


class Runner:
    """One machine of the fleet: an engine with a cache of its own."""

    def __init__(self, cache: Path, name: str, store: KeptStore) -> None:
        self.cache = cache
        config = EngineConfig(cache_dir=cache, runner_id=unique(name), push_interval_seconds=0.5)
        self.engine = RunEngine(config, kept=store)

    def run(self, request: RunRequest) -> tuple[RunFinished, Recorder]:
        recorder = Recorder()
        return self.engine.execute(request, recorder), recorder

    def gone(self) -> None:
        """The machine is gone, and its cache with it."""
        gitops.remove_tree(self.cache)

    def pending(self, clone_url: str) -> str | None:
        mirror = self.cache / "mirrors" / f"{gitops.repo_key(clone_url)}.git"
        return gitops.resolve(mirror, pending_ref(PIPELINE))


def request_for(gh: RunningFakeGitHub, prompt: str, n: int, image: str) -> RunRequest:
    return remote_request(
        gh, OWNER, REPO, prompt, n, issue=7, branch=BRANCH,
        token=SecretStr(gh.token_for(OWNER)), image=image,
    )  # fmt: skip


def tip(gh: RunningFakeGitHub, branch: str = BRANCH) -> str:
    sha = gh.fake.branch_sha(OWNER, REPO, branch)
    assert sha is not None, f"nothing on {branch}"
    return sha


def read(gh: RunningFakeGitHub, path: str, rev: str) -> str:
    return subprocess.run(
        ["git", "show", f"{rev}:{path}"],
        cwd=gh.fake.bare_path(OWNER, REPO), capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


def has(gh: RunningFakeGitHub, path: str, rev: str | None = None) -> bool:
    return gh.fake.has_file(OWNER, REPO, rev or tip(gh), path)


def person_pushes(gh: RunningFakeGitHub, where: Path, files: dict[str, str]) -> str:
    """A person pushes a commit to the pipeline branch, straight into the repository."""
    subprocess.run(
        ["git", "clone", "-q", "-b", BRANCH, str(gh.fake.bare_path(OWNER, REPO)), str(where)],
        check=True,
    )
    for name, text in files.items():
        (where / name).write_text(text)
    ident = ["-c", "user.name=Pat", "-c", "user.email=pat@example.com"]
    for args in (["add", "-A"], [*ident, "commit", "-qm", "A person's fix"], ["push", "-q"]):
        subprocess.run(["git", "-C", str(where), *args], check=True)
    return tip(gh)


def kept_events(recorder: Recorder) -> list[Kept]:
    return [e for e in recorder.events if isinstance(e, Kept)]


def ancestor(gh: RunningFakeGitHub, older: str, newer: str) -> bool:
    bare = gh.fake.bare_path(OWNER, REPO)
    return gitops.is_ancestor(bare, older, newer)


def test_refused_on_runner_a_is_pushed_by_runner_b_with_a_gone(
    gh: RunningFakeGitHub, store: KeptStore, tmp_path: Path, test_image: str
) -> None:
    a, b = Runner(tmp_path / "a", "a", store), Runner(tmp_path / "b", "b", store)
    gh.state.git_push_outage = True
    first, _ = a.run(request_for(gh, f"{COMMIT} && echo left > left.txt", 1, test_image))

    assert first.outcome is Outcome.FAILURE
    assert "kept for this pipeline" in first.reason, first.reason
    stored = store.get(PIPELINE, contract.KEPT_PENDING)
    assert stored is not None and stored.run_id == first.run_id and stored.count == 2
    assert "could not push" in stored.reason and stored.bundle is not None

    a.gone()
    gh.state.git_push_outage = False
    second, recorder = b.run(request_for(gh, "echo two > two.txt", 2, test_image))

    assert second.outcome is Outcome.SUCCESS, second.reason
    assert all(has(gh, name) for name in ("one.txt", "left.txt", "two.txt"))
    assert [c.subject for c in second.commits][:1] == ["First step"]
    (note,) = kept_events(recorder)
    assert (note.action, note.kept_by, note.commits) == ("continued", first.run_id, 2)
    assert store.entries(PIPELINE) == [], "the store still keeps what GitHub has now"
    assert b.pending(gh.clone_url(OWNER, REPO)) is None


def test_a_person_push_in_between_is_built_on_by_a_clean_replay(
    gh: RunningFakeGitHub, store: KeptStore, tmp_path: Path, test_image: str
) -> None:
    a, b = Runner(tmp_path / "a", "a", store), Runner(tmp_path / "b", "b", store)
    a.run(request_for(gh, "echo zero > zero.txt", 1, test_image))
    gh.state.git_push_outage = True
    kept, _ = a.run(request_for(gh, COMMIT, 2, test_image))
    gh.state.git_push_outage = False
    theirs = person_pushes(gh, tmp_path / "person", {"person.txt": "mine\n"})

    a.gone()
    third, recorder = b.run(request_for(gh, "echo two > two.txt", 3, test_image))

    assert third.outcome is Outcome.SUCCESS, third.reason
    assert ancestor(gh, theirs, tip(gh)), "the person's commit was not built on"
    assert all(has(gh, f) for f in ("zero.txt", "person.txt", "one.txt", "two.txt"))
    assert [c.subject for c in third.commits][:1] == ["First step"]
    (note,) = kept_events(recorder)
    assert (note.action, note.kept_by, note.commits) == ("replayed", kept.run_id, 1)
    assert store.entries(PIPELINE) == []


def test_kept_work_that_conflicts_is_set_aside_on_a_kept_branch(
    gh: RunningFakeGitHub, store: KeptStore, tmp_path: Path, test_image: str
) -> None:
    a, b = Runner(tmp_path / "a", "a", store), Runner(tmp_path / "b", "b", store)
    a.run(request_for(gh, "echo zero > zero.txt", 1, test_image))
    gh.state.git_push_outage = True
    prompt = "echo agent > shared.txt && git commit -qam 'Agent edit'"
    kept, _ = a.run(request_for(gh, prompt, 2, test_image))
    kept_head = a.pending(gh.clone_url(OWNER, REPO))
    gh.state.git_push_outage = False
    theirs = person_pushes(gh, tmp_path / "person", {"shared.txt": "person\n"})

    third, recorder = b.run(request_for(gh, "echo two > two.txt", 3, test_image))

    assert third.outcome is Outcome.SUCCESS, third.reason
    assert ancestor(gh, theirs, tip(gh)) and has(gh, "two.txt")
    assert read(gh, "shared.txt", tip(gh)) == "person\n"
    assert tip(gh, KEPT_BRANCH) == kept_head
    assert read(gh, "shared.txt", KEPT_BRANCH) == "agent\n"
    (note,) = kept_events(recorder)
    assert (note.action, note.branch, note.kept_by) == ("branch", KEPT_BRANCH, kept.run_id)
    assert note.why == "conflict"
    (entry,) = store.entries(PIPELINE)
    assert (entry.id, entry.branch, entry.bundle) == ("kept-1", KEPT_BRANCH, None)
    assert "could not push" in entry.reason and entry.commits[-1].subject == "Agent edit"


def test_kept_work_that_conflicts_while_pushes_fail_waits_as_a_bundle(
    gh: RunningFakeGitHub, store: KeptStore, tmp_path: Path, test_image: str
) -> None:
    a, b = Runner(tmp_path / "a", "a", store), Runner(tmp_path / "b", "b", store)
    a.run(request_for(gh, "echo zero > zero.txt", 1, test_image))
    gh.state.git_push_outage = True
    prompt = "echo agent > shared.txt && git commit -qam 'Agent edit'"
    a.run(request_for(gh, prompt, 2, test_image))
    kept_head = a.pending(gh.clone_url(OWNER, REPO))
    person_pushes(gh, tmp_path / "person", {"shared.txt": "person\n"})
    a.gone()

    third, recorder = b.run(request_for(gh, "echo two > two.txt", 3, test_image))

    assert third.outcome is Outcome.FAILURE  # its own commit waits too
    assert gh.fake.branch_sha(OWNER, REPO, KEPT_BRANCH) is None
    (note,) = kept_events(recorder)
    assert (note.action, note.entry) == ("bundle", "kept-1")
    assert note.why == "conflict" and "could not push" in note.refused
    entries = {entry.id: entry for entry in store.entries(PIPELINE)}
    assert set(entries) == {"pending", "kept-1"}
    set_aside = entries["kept-1"]
    assert set_aside.head == kept_head and set_aside.bundle is not None
    # What the dashboard offers is a bundle a person fetches the kept commits from.
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(gh.fake.bare_path(OWNER, REPO)), str(clone)])
    bundle = tmp_path / "kept.bundle"
    store.read_bundle(set_aside, bundle)
    subprocess.run(["git", "-C", str(clone), "bundle", "verify", "-q", str(bundle)], check=True)
    heads = subprocess.run(
        ["git", "-C", str(clone), "bundle", "list-heads", str(bundle)],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert heads[0] == kept_head


def test_kept_work_over_the_cap_stays_on_its_runner_and_says_so(
    gh: RunningFakeGitHub, redis_url: str, tmp_path: Path, test_image: str
) -> None:
    small = KeptStore(redis.Redis.from_url(redis_url), 16 * 1024)
    a = Runner(tmp_path / "a", "a", small)
    gh.state.git_push_outage = True
    prompt = "head -c 65536 /dev/urandom > big.bin && git add big.bin && git commit -qm Big"
    first, _ = a.run(request_for(gh, prompt, 1, test_image))

    assert first.outcome is Outcome.FAILURE
    assert "TRIMO_KEPT_MAX" in first.reason and "only on runner a" in first.reason, first.reason
    assert small.entries(PIPELINE) == []
    assert redis.Redis.from_url(redis_url).keys("trimo:kept:*") == []
    assert a.pending(gh.clone_url(OWNER, REPO)) is not None

    gh.state.git_push_outage = False
    second, _ = a.run(request_for(gh, "echo two > two.txt", 2, test_image))

    assert second.outcome is Outcome.SUCCESS, second.reason
    assert has(gh, "big.bin") and has(gh, "two.txt")


def test_a_forged_bundle_in_the_store_never_reaches_a_mirror(
    gh: RunningFakeGitHub, store: KeptStore, redis_url: str, tmp_path: Path, test_image: str
) -> None:
    a, b = Runner(tmp_path / "a", "a", store), Runner(tmp_path / "b", "b", store)
    gh.state.git_push_outage = True
    a.run(request_for(gh, COMMIT, 1, test_image))
    a.gone()
    # Someone who can write to Redis rewrites the bundle and its record's digest to match.
    record = store.get(PIPELINE, contract.KEPT_PENDING)
    assert record is not None and record.bundle is not None
    genuine = tmp_path / "genuine.bundle"
    store.read_bundle(record, genuine)
    forged = bytearray(genuine.read_bytes())
    forged[-40:-20] = b"\x00" * 20  # inside the pack
    client = redis.Redis.from_url(redis_url)
    client.delete(record.bundle.key)
    client.rpush(record.bundle.key, bytes(forged))
    forged_ref = record.bundle.model_copy(update={"sha256": hashlib.sha256(forged).hexdigest()})
    client.hset(
        contract.kept_work(PIPELINE),
        record.id,
        record.model_copy(update={"bundle": forged_ref}).model_dump_json(),
    )
    gh.state.git_push_outage = False

    second, recorder = b.run(request_for(gh, "echo two > two.txt", 2, test_image))

    assert second.outcome is Outcome.SUCCESS, second.reason
    mirror = b.cache / "mirrors" / f"{gitops.repo_key(gh.clone_url(OWNER, REPO))}.git"
    assert gitops.resolve(mirror, record.head) is None, "the forged bundle reached the mirror"
    assert not has(gh, "one.txt")
    (note,) = kept_events(recorder)
    assert (note.action, note.entry) == ("bundle", "kept-1")
    assert note.why == "unverified" and note.problem
    (entry,) = store.entries(PIPELINE)
    assert entry.id == "kept-1" and entry.bundle == forged_ref, "nothing is deleted"
