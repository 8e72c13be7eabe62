"""Kept commits on the pipeline page, and their bundle, over real HTTP on a real Redis."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from runner import contract
from runner.job import CommitInfo
from runner.kept import KeptRecord
from runner.keptstore import KeptStore
from tests.conftest import git
from tests.dashboard_helpers import (
    dashboard_settings,
    make_pipeline,
    make_run,
    seed_sync,
    signed_in,
)
from tests.webhook_helpers import RunningApp, running_app

HOSTILE = '<script>alert("x")</script>'
PIPELINE = make_pipeline("o/r", 4, "Keep it")


@pytest.fixture
def dash(redis_url: str) -> Iterator[RunningApp]:
    with running_app(dashboard_settings(redis_url)) as running:
        yield running


@pytest.fixture
def kept_bundle(sample_repo: Path, tmp_path: Path, redis_url: str) -> tuple[Path, KeptRecord]:
    """A set aside bundle of one commit of `sample_repo`, stored as a runner stores it."""
    base = git(sample_repo, "rev-parse", "HEAD")
    git(sample_repo, "checkout", "-q", "-b", "agent")
    (sample_repo / "kept.txt").write_text("kept\n")
    git(sample_repo, "add", "kept.txt")
    git(sample_repo, "commit", "-qm", HOSTILE)
    head = git(sample_repo, "rev-parse", "HEAD")
    git(sample_repo, "checkout", "-q", "main")
    bundle = tmp_path / "kept.bundle"
    git(sample_repo, "bundle", "create", str(bundle), "agent", f"^{base}")
    record = KeptRecord(
        id="kept-1", pipeline=PIPELINE.id, clone_url=PIPELINE.clone_url, run_id="o.r.4-a",
        reason=f"the repository refused commit {head[:7]}: {HOSTILE}", head=head, base=base,
        count=1, commits=[CommitInfo(sha=head, subject=HOSTILE)],
    )  # fmt: skip
    store = KeptStore(redis.Redis.from_url(redis_url), 1 << 20)
    stored = store.put(record, bundle)
    on_branch = record.model_copy(update={"id": "kept-2", "branch": "trimo/o.r.4-kept-2"})
    store.put(on_branch, None)
    other_repo = record.model_copy(update={"id": "kept-3", "clone_url": "http://git.test/x.git"})
    store.put(other_repo, bundle)
    return bundle, stored


def client_as(app: RunningApp, login: str, role: str) -> httpx.Client:
    client, _ = signed_in(app.base_url, app.settings, login, {"o/r": role})
    return client


def test_the_pipeline_page_lists_kept_commits_and_offers_their_bundle(
    dash: RunningApp, redis_url: str, sample_repo: Path, kept_bundle: tuple[Path, KeptRecord]
) -> None:
    bundle, record = kept_bundle
    seed_sync(redis_url, PIPELINE, make_run("o.r.4-a"))
    with client_as(dash, "alice", "write") as client:
        html = client.get(f"/pipelines/{PIPELINE.id}").text
        download = client.get(f"/pipelines/{PIPELINE.id}/kept/kept-1")
        assert client.get(f"/pipelines/{PIPELINE.id}/kept/kept-2").status_code == 404
        assert client.get(f"/pipelines/{PIPELINE.id}/kept/kept-3").status_code == 404
        assert client.get(f"/pipelines/{PIPELINE.id}/kept/..%2Fx").status_code == 404

    assert 'id="kept"' in html and 'data-entry="kept-1"' in html and 'data-entry="kept-2"' in html
    assert 'data-entry="kept-3"' not in html, "another repository's kept commits"
    assert HOSTILE not in html and "&lt;script&gt;" in html
    assert "the repository refused commit" in html
    assert 'href="http://git.test/o/r/tree/trimo/o.r.4-kept-2"' in html
    assert f'href="/pipelines/{PIPELINE.id}/kept/kept-1"' in html
    assert f'href="/pipelines/{PIPELINE.id}/kept/kept-2"' not in html
    assert download.status_code == 200
    assert download.content == bundle.read_bytes()
    assert "attachment" in download.headers["content-disposition"]
    taken = Path(str(bundle) + ".downloaded")
    taken.write_bytes(download.content)
    subprocess.run(
        ["git", "-C", str(sample_repo), "bundle", "verify", "-q", str(taken)], check=True
    )
    assert record.bundle is not None and record.bundle.size == len(download.content)


def test_only_people_who_may_push_download_kept_commits(
    dash: RunningApp, redis_url: str, kept_bundle: tuple[Path, KeptRecord]
) -> None:
    seed_sync(redis_url, PIPELINE, make_run("o.r.4-a"))
    seed_sync(redis_url, make_pipeline("x/secret", 3), make_run("x.secret.3-a"))
    with client_as(dash, "reader", "read") as client:
        html = client.get(f"/pipelines/{PIPELINE.id}").text
        assert 'data-entry="kept-1"' in html and "kept-download" not in html
        assert client.get(f"/pipelines/{PIPELINE.id}/kept/kept-1").status_code == 403
    with client_as(dash, "alice", "write") as client:
        assert client.get("/pipelines/x.secret.3/kept/kept-1").status_code == 404
    assert dash.client.get(f"/pipelines/{PIPELINE.id}/kept/kept-1").status_code == 303


def test_no_kept_commits_no_section(dash: RunningApp, redis_url: str) -> None:
    seed_sync(redis_url, PIPELINE, make_run("o.r.4-a"))
    with client_as(dash, "alice", "write") as client:
        assert 'id="kept"' not in client.get(f"/pipelines/{PIPELINE.id}").text
    assert not redis.Redis.from_url(redis_url).exists(contract.kept_work(PIPELINE.id))
