"""The whole loop on one machine: a GitHub stand-in, `trimo serve` and `trimo runner`
as real processes, real Redis, real Docker, real git. Used by the end-to-end test and
by bench/loop_latency.py."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx

from runner import contract
from tests.conftest import unique
from tests.fakegithub import AppCredentials, RunningFakeGitHub
from tests.fakegithub.state import CheckRun, IssueComment
from tests.webhook_helpers import free_port, sign

OWNER = "octo-org"
REPO = "widgets"
WRITER = "alice"
SECRET = "e2e-webhook-secret"
CONFIG = "agent: script\nimage: trimo-agent:base\ntimeout_minutes: 10\n"
RUNNER_ID = unique("e2e-runner")

T = TypeVar("T")


class Loop:
    """Processes and helpers; `start()` then drive it with comments."""

    def __init__(
        self,
        gh: RunningFakeGitHub,
        redis_url: str,
        workdir: Path,
        corpora: Path,
        files: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.gh = gh
        self.state = gh.state
        self.redis_url = redis_url
        self.workdir = workdir
        self.corpora = corpora
        self.port = free_port()
        self.creds: AppCredentials = gh.install_app(OWNER)
        repo_files = {"README.md": "# widgets\n", ".github/trimo.yml": CONFIG, **(files or {})}
        gh.create_repo(OWNER, REPO, repo_files)
        self.state.set_role(OWNER, REPO, WRITER, "write")
        self.serve: subprocess.Popen[bytes] | None = None
        self.runner: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(timeout=10)
        self.extra_env: dict[str, str] = dict(env or {})
        """More `TRIMO_*` settings for the processes (e.g. the dashboard's sign-in, previews)."""

    # --- processes ----------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "TRIMO_GITHUB_APP_ID": str(self.creds.app_id),
            "TRIMO_GITHUB_PRIVATE_KEY": self.creds.private_key_pem,
            "TRIMO_WEBHOOK_SECRET": SECRET,
            "TRIMO_GITHUB_API_URL": self.gh.api_url,
            "TRIMO_APP_SLUG": "trimo",
            "TRIMO_REDIS_URL": self.redis_url,
            "TRIMO_HOST": "127.0.0.1",
            "TRIMO_PORT": str(self.port),
            "TRIMO_CACHE_DIR": str(self.workdir / "cache"),
            "TRIMO_RUNNER_ID": RUNNER_ID,
            "TRIMO_RUNNER_CONCURRENCY": "3",
            "TRIMO_STOP_GRACE_SECONDS": "1",
            "COLUMNS": "200",
            **self.extra_env,
        }

    def _spawn(self, command: str, name: str = "", **env: str) -> subprocess.Popen[bytes]:
        """`trimo COMMAND` with the loop's environment and `env` on top, logged to NAME.log."""
        log = (self.workdir / f"{name or command}.log").open("ab")
        return subprocess.Popen(
            [sys.executable, "-m", "app.ops.cli", command],
            env={**self._env(), **env},
            stdout=log,
            stderr=log,
        )

    @property
    def url(self) -> str:
        """Where `trimo serve` answers (webhooks, the dashboard)."""
        return f"http://127.0.0.1:{self.port}"

    def start_serve(self) -> None:
        self.serve = self._spawn("serve")
        self.wait(lambda: self._healthy(), 30, "trimo serve to answer /healthz")

    def start_runner(self) -> None:
        self.runner = self._spawn("runner")
        import redis

        client = redis.Redis.from_url(self.redis_url)
        self.wait(
            lambda: client.exists(contract.runner_info(RUNNER_ID)), 30, "the runner to announce"
        )

    def start(self) -> Loop:
        """Serve and a runner on an empty Redis: an earlier loop's pipelines, queues and
        streams (same repository, same issue numbers) must not leak into this one."""
        import redis

        client = redis.Redis.from_url(self.redis_url)
        try:
            client.flushdb()
        finally:
            client.close()
        self.start_serve()
        self.start_runner()
        return self

    def kill_serve(self) -> None:
        assert self.serve is not None
        self.serve.send_signal(signal.SIGKILL)
        self.serve.wait(10)

    def stop(self) -> None:
        for proc in (self.serve, self.runner):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (self.serve, self.runner):
            if proc is not None:
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
        self.http.close()

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def _healthy(self) -> bool:
        try:
            return self.http.get(f"http://127.0.0.1:{self.port}/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    # --- GitHub side --------------------------------------------------------------------

    def new_issue(self, title: str, body: str = "", repo: str = REPO, owner: str = OWNER) -> int:
        return self.state.add_issue(owner, repo, title, body, WRITER).number

    def comment(
        self, number: int, body: str, login: str = WRITER, repo: str = REPO
    ) -> IssueComment:
        """A comment on issue `number`, delivered as a signed `issue_comment` webhook."""
        comment, payload = self.comment_event(number, body, login, repo)
        self.deliver("issue_comment", payload)
        return comment

    def comment_event(
        self, number: int, body: str, login: str = WRITER, repo: str = REPO, owner: str = OWNER
    ) -> tuple[IssueComment, dict[str, Any]]:
        """A comment on issue `number` and its `issue_comment` webhook payload, not sent."""
        issue = self.state.issues[(owner, repo, number)]
        comment = self.state.add_comment(owner, repo, number, body, login)
        payload = self.payload("issue_comment.created.1.json", repo, owner)
        user = {**payload["comment"]["user"], "login": login, "type": "User"}
        payload["issue"].update(number=number, title=issue.title, body=issue.body, state="open")
        payload["issue"].pop("pull_request", None)
        payload["comment"].update(id=comment.id, body=body, user=user)
        payload["comment"]["performed_via_github_app"] = None
        payload["sender"] = user
        return comment, payload

    def payload(self, name: str, repo: str = REPO, owner: str = OWNER) -> dict[str, Any]:
        """Corpus webhook `name`, aimed at `owner`/`repo` of the stand-in and the App's
        installation there."""
        payload: dict[str, Any] = json.loads((self.corpora / "webhooks" / name).read_text())
        payload["repository"].update(
            name=repo,
            full_name=f"{owner}/{repo}",
            clone_url=self.gh.clone_url(owner, repo),
            default_branch="main",
        )
        payload["repository"]["owner"] = {**payload["repository"]["owner"], "login": owner}
        installation = self.gh.install_app(owner).installation_id
        payload["installation"] = {"id": installation, "node_id": "MDIz"}
        return payload

    def announce_installation(self) -> None:
        """The `installation.created` delivery GitHub sends when the App is installed on
        OWNER's repositories; the App learns from it which installation serves each one."""
        payload = json.loads(
            (self.corpora / "webhooks" / "installation.created.1.json").read_text()
        )
        repo = self.state.repo(OWNER, REPO)
        assert repo is not None
        payload["installation"].update(id=self.creds.installation_id, app_id=self.creds.app_id)
        payload["installation"]["account"] = {
            **payload["installation"]["account"],
            "login": OWNER,
            "type": "Organization",
        }
        payload["repositories"] = [
            {**payload["repositories"][0], "id": repo.id, "name": REPO, "full_name": repo.full_name}
        ]
        self.deliver("installation", payload)

    def deliver(self, event: str, payload: dict[str, Any]) -> httpx.Response:
        body = json.dumps(copy.deepcopy(payload)).encode()
        response = self.http.post(
            f"http://127.0.0.1:{self.port}/webhooks/github",
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-GitHub-Event": event,
                "X-GitHub-Delivery": str(uuid.uuid4()),
                "X-Hub-Signature-256": sign(SECRET, body),
            },
        )
        assert response.status_code in (200, 202), response.text
        return response

    def check_runs(self) -> list[CheckRun]:
        with self.state.lock:
            return list(self.state.check_runs.values())

    def check_for(self, run_hint: str) -> CheckRun | None:
        """The check run whose external id (the run id) contains `run_hint`."""
        return next((c for c in self.check_runs() if run_hint in (c.external_id or "")), None)

    def bot_comments(self, number: int) -> list[str]:
        return [c.body for c in self.state.comments_on(number, OWNER, REPO) if c.via_app]

    def reactions(self, comment_id: int) -> list[str]:
        return [r.content for r in self.state.comments[comment_id].reactions]

    def file_on(self, branch: str, path: str) -> str | None:
        bare = self.gh.fake.bare_path(OWNER, REPO)
        proc = subprocess.run(
            ["git", "-C", str(bare), "show", f"refs/heads/{branch}:{path}"],
            capture_output=True,
            text=True,
        )
        return proc.stdout if proc.returncode == 0 else None

    def branches(self) -> list[str]:
        bare = self.gh.fake.bare_path(OWNER, REPO)
        out = subprocess.run(
            ["git", "-C", str(bare), "for-each-ref", "--format=%(refname:short)", "refs/heads"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return out.split()

    @staticmethod
    def wait(probe: Callable[[], T], timeout: float, what: str) -> T:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = probe()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@contextmanager
def running_loop(
    redis_url: str,
    workdir: Path,
    corpora: Path,
    files: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    *,
    strict: bool = True,
) -> Iterator[Loop]:
    """A started loop on a GitHub stand-in of its own, stopped after; `strict`: the stand-in
    must have seen no request GitHub would refuse as malformed."""
    with RunningFakeGitHub() as gh:
        loop = Loop(gh, redis_url, workdir, corpora, files=files, env=env).start()
        try:
            yield loop
        finally:
            loop.stop()
            if strict:
                assert gh.state.violations == [], gh.state.violations
