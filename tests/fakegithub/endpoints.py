"""The REST endpoints the Trimo App uses, one handler each, and the table that routes them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from githubkit_schemas.latest import models as m  # request bodies only: what Trimo sends
from starlette.concurrency import run_in_threadpool

from tests.fakegithub import gitserver
from tests.fakegithub.render import PullStats, Renderer
from tests.fakegithub.replies import GitHubError, Moved, Reply, not_found, validation_failed
from tests.fakegithub.state import (
    CheckRun,
    FakeState,
    Issue,
    IssueComment,
    Pull,
    Reaction,
    ReviewComment,
    Token,
    now,
)

Auth = Literal["app", "installation", "none"]
MAX_COMMENT = 65536


@dataclass
class Call:
    """One request, authenticated and with its body validated."""

    method: str
    state: FakeState
    render: Renderer
    root: Path
    params: dict[str, str]
    query: Mapping[str, str]
    body: dict[str, Any]
    token: Token | None

    @property
    def owner(self) -> str:
        return self.params["owner"]

    @property
    def repo(self) -> str:
        return self.params["repo"]

    @property
    def bare(self) -> Path:
        return gitserver.repo_path(self.root, self.owner, self.repo)

    def number(self, name: str) -> int:
        value = self.params[name]
        if not value.isdigit():
            raise not_found()
        return int(value)


Handler = Callable[[Call], Awaitable[Reply]]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    auth: Auth
    permissions: Sequence[tuple[str, str]] = ()  # any one of these suffices
    body: Any = None  # the documented request body (githubkit's model of GitHub's schema)

    @property
    def name(self) -> str:
        return self.handler.__name__

    @property
    def needs(self) -> frozenset[str]:
        """The answer's fields Trimo reads; drift leaves them alone."""
        return NEEDS.get(self.name, frozenset())


# --- apps -------------------------------------------------------------------------------


async def get_app(call: Call) -> Reply:
    return Reply(200, call.render.app())


async def get_installation(call: Call) -> Reply:
    inst = call.state.installations.get(call.number("installation_id"))
    if inst is None:
        raise not_found()
    return Reply(200, call.render.installation(inst))


async def create_access_token(call: Call) -> Reply:
    state = call.state
    inst = state.installations.get(call.number("installation_id"))
    if inst is None:
        raise not_found()
    if inst.suspended:
        raise GitHubError(403, "This installation has been suspended")
    names: list[str] | None = None
    if "repositories" in call.body or "repository_ids" in call.body:
        with state.lock:
            by_id = {r.id: r.name for r in state.repos.values() if r.owner == inst.account}
        names = list(call.body.get("repositories", []))
        names += [by_id.get(i, f"#{i}") for i in call.body.get("repository_ids", [])]
        if any(state.repo(inst.account, name) is None for name in names):
            raise GitHubError(
                422,
                "There is at least one repository that does not exist or is not accessible"
                " to the parent installation.",
            )
    permissions: dict[str, str] | None = call.body.get("permissions")
    if permissions is not None:
        for key, level in permissions.items():
            granted = inst.permissions.get(key)
            if granted is None or (level == "write" and granted == "read"):
                raise GitHubError(
                    422, "The permissions requested are not granted to this installation."
                )
    token = state.issue_token(inst.id, permissions, names)
    return Reply(201, call.render.token(token))


async def get_repo_installation(call: Call) -> Reply:
    inst = call.state.installation_for(call.owner)
    if inst is None or call.state.repo(call.owner, call.repo) is None:
        raise not_found()
    return Reply(200, call.render.installation(inst))


# --- repositories ---------------------------------------------------------------------------


async def get_repo(call: Call) -> Reply:
    repo = call.state.repo(call.owner, call.repo)
    assert repo is not None
    return Reply(200, call.render.repo_full(repo))


async def get_ref(call: Call) -> Reply:
    """GET /repos/{o}/{r}/git/ref/heads/{branch}: the branch head, read from the real repository."""
    ref = call.params["ref"]
    sha = None
    if ref.startswith("heads/"):
        sha = await run_in_threadpool(gitserver.branch_sha, call.bare, ref.removeprefix("heads/"))
    if sha is None:
        raise not_found()
    api = f"{call.render.base}/repos/{call.owner}/{call.repo}"
    return Reply(
        200,
        {
            "ref": f"refs/{ref}",
            "node_id": "MDM6UmVm",
            "url": f"{api}/git/refs/{ref}",
            "object": {"type": "commit", "sha": sha, "url": f"{api}/git/commits/{sha}"},
        },
    )


def _ref_answer(call: Call, branch: str, sha: str) -> dict[str, Any]:
    api = f"{call.render.base}/repos/{call.owner}/{call.repo}"
    return {
        "ref": f"refs/heads/{branch}",
        "node_id": "MDM6UmVm",
        "url": f"{api}/git/refs/heads/{branch}",
        "object": {"type": "commit", "sha": sha, "url": f"{api}/git/commits/{sha}"},
    }


_REF_REFUSALS: dict[str, GitHubError] = {
    "exists": GitHubError(422, "Reference already exists"),
    "missing": GitHubError(422, "Reference does not exist"),
    "not_fast_forward": GitHubError(422, "Update is not a fast forward"),
    "protected": GitHubError(422, "Protected branch update failed for refs/heads."),
    "no_commit": GitHubError(422, "Object does not exist"),
}


async def _change_ref(
    call: Call, branch: str, sha: str | None, *, create: bool = False, force: bool = False
) -> None:
    done = await run_in_threadpool(
        gitserver.change_branch, call.bare, branch, sha, create=create, force=force
    )
    if done != "done":
        raise _REF_REFUSALS[done]


def _heads_branch(ref: str) -> str:
    if not ref.startswith(("heads/", "refs/heads/")):
        raise validation_failed("Reference", "invalid", field="ref")
    return ref.removeprefix("refs/").removeprefix("heads/")


async def create_ref(call: Call) -> Reply:
    """POST /repos/{o}/{r}/git/refs: a new branch on a commit, in the real repository."""
    ref, sha = str(call.body["ref"]), str(call.body["sha"])
    if not ref.startswith("refs/heads/"):
        raise validation_failed("Reference", "invalid", field="ref")
    branch = _heads_branch(ref)
    await _change_ref(call, branch, sha, create=True)
    return Reply(201, _ref_answer(call, branch, sha))


async def update_ref(call: Call) -> Reply:
    """PATCH /repos/{o}/{r}/git/refs/heads/{branch}: move a branch (fast-forward unless
    `force`), in the real repository."""
    branch, sha = _heads_branch(call.params["ref"]), str(call.body["sha"])
    await _change_ref(call, branch, sha, force=bool(call.body.get("force")))
    return Reply(200, _ref_answer(call, branch, sha))


async def delete_ref(call: Call) -> Reply:
    """DELETE /repos/{o}/{r}/git/refs/heads/{branch}."""
    await _change_ref(call, _heads_branch(call.params["ref"]), None)
    return Reply(204, None)


async def list_branches(call: Call) -> Reply:
    """GET /repos/{o}/{r}/branches: the first page of branches, from the real repository."""
    per_page = min(100, int(call.query.get("per_page") or 30))
    found = await run_in_threadpool(gitserver.branches, call.bare)
    api = f"{call.render.base}/repos/{call.owner}/{call.repo}"
    return Reply(
        200,
        [
            {"name": name, "commit": {"sha": sha, "url": f"{api}/commits/{sha}"},
             "protected": False}
            for name, sha in found[:per_page]
        ],
    )  # fmt: skip


async def get_permission(call: Call) -> Reply:
    return Reply(200, call.render.permission(call.owner, call.repo, call.params["username"]))


async def get_content(call: Call) -> Reply:
    repo = call.state.repo(call.owner, call.repo)
    assert repo is not None
    ref = call.query.get("ref") or repo.default_branch
    path = call.params["path"].strip("/")
    found = await run_in_threadpool(gitserver.read_file, call.bare, ref, path)
    if found is None:
        raise not_found()
    sha, data = found
    return Reply(200, call.render.content(call.owner, call.repo, path, ref, sha, data))


def _comparison(call: Call, base_ref: str, head_ref: str) -> Reply:
    bare = call.bare
    base_sha, head_sha = gitserver.resolve(bare, base_ref), gitserver.resolve(bare, head_ref)
    if base_sha is None or head_sha is None:
        raise not_found()
    ahead = gitserver.run_git(bare, "rev-list", "--count", f"{base_sha}..{head_sha}")
    behind = gitserver.run_git(bare, "rev-list", "--count", f"{head_sha}..{base_sha}")
    ahead_by, behind_by = int(ahead.stdout.strip()), int(behind.stdout.strip())
    status = (
        "identical"
        if ahead_by == behind_by == 0
        else "ahead"
        if behind_by == 0
        else "behind"
        if ahead_by == 0
        else "diverged"
    )
    web = call.render.web_repo(call.owner, call.repo)
    api = call.render.api_repo(call.owner, call.repo)
    spec = f"{base_ref}...{head_ref}"
    files = []
    for changed in gitserver.changed_files(bare, base_sha, head_sha)[:300]:
        blob = f"{web}/blob/{head_sha}/{changed.filename}"
        entry: dict[str, Any] = {
            "sha": head_sha,
            "filename": changed.filename,
            "status": changed.status,
            "additions": changed.additions,
            "deletions": changed.deletions,
            "changes": changed.additions + changed.deletions,
            "blob_url": blob,
            "raw_url": f"{web}/raw/{head_sha}/{changed.filename}",
            "contents_url": f"{api}/contents/{changed.filename}?ref={head_sha}",
        }
        if changed.patch is not None:
            entry["patch"] = changed.patch
        if changed.previous_filename is not None:
            entry["previous_filename"] = changed.previous_filename
        files.append(entry)
    return Reply(
        200,
        {
            "url": f"{api}/compare/{spec}",
            "html_url": f"{web}/compare/{spec}",
            "permalink_url": f"{web}/compare/{base_sha[:7]}...{head_sha[:7]}",
            "diff_url": f"{web}/compare/{spec}.diff",
            "patch_url": f"{web}/compare/{spec}.patch",
            "status": status,
            "ahead_by": ahead_by,
            "behind_by": behind_by,
            "total_commits": ahead_by,
            "commits": [],
            "files": files,
        },
    )


async def compare(call: Call) -> Reply:
    """GET /repos/{o}/{r}/compare/{base}...{head}, computed by git on the real repository."""
    base, sep, head = call.params["basehead"].partition("...")
    if not sep or not base or not head:
        raise not_found()
    return await run_in_threadpool(_comparison, call, base, head)


# --- issues and comments ---------------------------------------------------------------------


ISSUES_DISABLED = "Issues are disabled for this repo"


def _present(call: Call, issue: Issue | None, url: str) -> Issue:
    """`issue` as GitHub answers for it now: gone (404), moved (301/307), disabled (410)."""
    repo = call.state.repo(call.owner, call.repo)
    if repo is not None and not repo.has_issues and (issue is None or not issue.is_pull):
        raise GitHubError(410, ISSUES_DISABLED)
    if issue is None or issue.deleted:
        raise not_found()
    if issue.moved_to is not None:
        owner, name, number = issue.moved_to
        raise Moved(url.format(api=call.render.api_repo(owner, name), number=number), call.method)
    return issue


def _issue(call: Call) -> Issue:
    issue = call.state.issues.get((call.owner, call.repo, call.number("issue_number")))
    return _present(call, issue, "{api}/issues/{number}")


def _comment_body(call: Call) -> str:
    body: str = call.body["body"]
    if len(body) > MAX_COMMENT:
        raise validation_failed(
            "IssueComment",
            "custom",
            field="body",
            message=f"body is too long (maximum is {MAX_COMMENT} characters)",
        )
    return body


def _int_query(call: Call, name: str, default: int) -> int:
    value = call.query.get(name)
    if value is None:
        return default
    if not value.isdigit():
        raise validation_failed("Query", "invalid", field=name)
    return int(value)


def _page(call: Call, items: list[Any], path: str) -> tuple[list[Any], dict[str, str]]:
    per_page = min(max(_int_query(call, "per_page", 30), 1), 100)
    page = max(_int_query(call, "page", 1), 1)
    last = max(1, -(-len(items) // per_page))
    links = []
    base = f"{call.render.base}{path}?per_page={per_page}&page="
    if page < last:
        links += [f'<{base}{page + 1}>; rel="next"', f'<{base}{last}>; rel="last"']
    if page > 1:
        links += [f'<{base}1>; rel="first"', f'<{base}{page - 1}>; rel="prev"']
    headers = {"link": ", ".join(links)} if links else {}
    return items[(page - 1) * per_page : page * per_page], headers


async def get_issue(call: Call) -> Reply:
    return Reply(200, call.render.issue(_issue(call)))


async def list_comments(call: Call) -> Reply:
    issue = _issue(call)
    comments = sorted(
        call.state.comments_on(issue.number, call.owner, call.repo), key=lambda c: c.id
    )
    page, headers = _page(
        call, comments, f"/repos/{call.owner}/{call.repo}/issues/{issue.number}/comments"
    )
    return Reply(200, [call.render.comment(c) for c in page], headers)


async def create_comment(call: Call) -> Reply:
    issue = _issue(call)
    body = _comment_body(call)
    with call.state.lock:
        comment = call.state.add_comment(
            call.owner, call.repo, issue.number, body, call.state.bot_login, via_app=True
        )
        issue.updated_at = now()
    return Reply(201, call.render.comment(comment))


def _issue_comment(call: Call) -> IssueComment:
    comment = call.state.comments.get(call.number("comment_id"))
    if comment is None or (comment.owner, comment.repo) != (call.owner, call.repo):
        raise not_found()
    issue = call.state.issues.get((comment.owner, comment.repo, comment.issue_number))
    _present(call, issue, "{api}/issues/comments/" + str(comment.id))
    return comment


async def get_comment(call: Call) -> Reply:
    return Reply(200, call.render.comment(_issue_comment(call)))


async def update_comment(call: Call) -> Reply:
    comment = _issue_comment(call)
    body = _comment_body(call)
    with call.state.lock:
        comment.body = body
        comment.updated_at = now()
    return Reply(200, call.render.comment(comment))


def _react(call: Call, target: list[Reaction]) -> Reply:
    reaction, new = call.state.add_reaction(target, call.state.bot_login, call.body["content"])
    return Reply(201 if new else 200, call.render.reaction(reaction))


async def react_to_comment(call: Call) -> Reply:
    return _react(call, _issue_comment(call).reactions)


async def react_to_issue(call: Call) -> Reply:
    return _react(call, _issue(call).reactions)


def _review_comment(call: Call) -> ReviewComment:
    comment = call.state.review_comments.get(call.number("comment_id"))
    if comment is None or (comment.owner, comment.repo) != (call.owner, call.repo):
        raise not_found()
    return comment


async def react_to_review_comment(call: Call) -> Reply:
    return _react(call, _review_comment(call).reactions)


async def reply_to_review_comment(call: Call) -> Reply:
    target = _review_comment(call)
    if target.pull_number != call.number("pull_number"):
        raise not_found()
    body = _comment_body(call)
    reply = call.state.add_review_comment(
        call.owner,
        call.repo,
        target.pull_number,
        body,
        call.state.bot_login,
        path=target.path,
        in_reply_to_id=target.in_reply_to_id or target.id,
        via_app=True,
    )
    return Reply(201, call.render.review_comment(reply))


# --- check runs -----------------------------------------------------------------------------


async def list_check_runs_for_suite(call: Call) -> Reply:
    """`GET .../check-suites/{check_suite_id}/check-runs`: the suite's runs, newest first,
    with `check_name` and `status` filters (the same answer as for a ref)."""
    suite = call.number("check_suite_id")
    name, status = call.query.get("check_name"), call.query.get("status")
    with call.state.lock:
        runs = [
            r
            for r in call.state.check_runs.values()
            if (r.owner, r.repo, r.check_suite_id) == (call.owner, call.repo, suite)
            and (name is None or r.name == name)
            and (status is None or r.status == status)
        ]
    if not runs:
        raise not_found()
    runs.sort(key=lambda r: r.id, reverse=True)
    page, headers = _page(
        call, runs, f"/repos/{call.owner}/{call.repo}/check-suites/{suite}/check-runs"
    )
    return Reply(
        200,
        {"total_count": len(runs), "check_runs": [call.render.check_run(r) for r in page]},
        headers,
    )


def _timestamp(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _apply_check_fields(run: CheckRun, body: dict[str, Any]) -> None:
    """Apply a create/update body as GitHub does (a conclusion implies `completed`)."""
    for key in ("name", "details_url", "external_id"):
        if key in body:
            setattr(run, key, body[key])
    if "started_at" in body:
        run.started_at = _timestamp(body["started_at"])
    if "status" in body:
        run.status = body["status"]
        if run.status != "completed":
            run.conclusion = None
            run.completed_at = None
    if "output" in body:
        output = body["output"]
        for key in ("title", "summary", "text"):
            if key in output:
                run.output[key] = output[key]
        run.output.setdefault("annotations", []).extend(output.get("annotations", []))
    if "actions" in body:
        run.actions = list(body["actions"])
    if body.get("conclusion") is not None:
        run.conclusion = body["conclusion"]
        run.status = "completed"
    if "completed_at" in body:
        run.completed_at = _timestamp(body["completed_at"])
    if run.status == "completed" and run.completed_at is None:
        run.completed_at = now()
    run.updates += 1


def _check_run(call: Call) -> CheckRun:
    run = call.state.check_runs.get(call.number("check_run_id"))
    if run is None or (run.owner, run.repo) != (call.owner, call.repo):
        raise not_found()
    return run


async def create_check_run(call: Call) -> Reply:
    sha = call.body["head_sha"]
    if await run_in_threadpool(gitserver.resolve, call.bare, sha) != sha:
        raise GitHubError(422, f"No commit found for SHA: {sha}")
    with call.state.lock:
        run = call.state.add_check_run(call.owner, call.repo, call.body["name"], sha)
        _apply_check_fields(run, call.body)
    return Reply(201, call.render.check_run(run))


async def update_check_run(call: Call) -> Reply:
    run = _check_run(call)
    with call.state.lock:
        _apply_check_fields(run, call.body)
    return Reply(200, call.render.check_run(run))


async def get_check_run(call: Call) -> Reply:
    return Reply(200, call.render.check_run(_check_run(call)))


async def list_check_runs_for_ref(call: Call) -> Reply:
    """`GET .../commits/{ref}/check-runs`: newest first, `check_name` and `status` filters."""
    ref = call.params["ref"]
    sha = await run_in_threadpool(gitserver.resolve, call.bare, ref)
    if sha is None:
        raise GitHubError(422, f"No commit found for SHA: {ref}")
    name, status = call.query.get("check_name"), call.query.get("status")
    with call.state.lock:
        runs = [
            r
            for r in call.state.check_runs.values()
            if (r.owner, r.repo, r.head_sha) == (call.owner, call.repo, sha)
            and (name is None or r.name == name)
            and (status is None or r.status == status)
        ]
    runs.sort(key=lambda r: r.id, reverse=True)
    page, headers = _page(call, runs, f"/repos/{call.owner}/{call.repo}/commits/{ref}/check-runs")
    return Reply(
        200,
        {"total_count": len(runs), "check_runs": [call.render.check_run(r) for r in page]},
        headers,
    )


# --- pull requests --------------------------------------------------------------------------


def _stats(bare: Path, pull: Pull) -> PullStats:
    head = gitserver.branch_sha(bare, pull.head_ref) if pull.state == "open" else None
    base = gitserver.branch_sha(bare, pull.base_ref) or pull.base_sha
    head = head or pull.head_sha
    found = gitserver.divergence(bare, base, head)
    return PullStats(
        head, base, found.commits, found.additions, found.deletions, found.changed_files
    )


async def _live_stats(call: Call, pull: Pull) -> PullStats:
    stats = await run_in_threadpool(_stats, call.bare, pull)
    with call.state.lock:
        pull.head_sha, pull.base_sha = stats.head_sha, stats.base_sha
    return stats


def _branch(call: Call, spec: str) -> str:
    owner, colon, ref = spec.rpartition(":")
    if colon and owner != call.owner:
        raise validation_failed("PullRequest", "invalid", field="head")
    return ref


def _open_pull_for(call: Call, head_ref: str, ignore: int = 0) -> Pull | None:
    with call.state.lock:
        pulls = list(call.state.pulls.values())
    return next(
        (
            p
            for p in pulls
            if (p.owner, p.repo, p.head_ref, p.state) == (call.owner, call.repo, head_ref, "open")
            and p.number != ignore
        ),
        None,
    )


async def create_pull(call: Call) -> Reply:
    if "issue" in call.body or "title" not in call.body:
        raise validation_failed("PullRequest", "missing_field", field="title")
    head_ref = _branch(call, call.body["head"])
    base_ref = call.body["base"]
    head_sha = await run_in_threadpool(gitserver.branch_sha, call.bare, head_ref)
    base_sha = await run_in_threadpool(gitserver.branch_sha, call.bare, base_ref)
    with call.state.lock:
        refusal = call.state.pull_refusals.pop(0) if call.state.pull_refusals else None
    if refusal == "base_deleted":
        base_sha = None
    if base_sha is None:
        raise validation_failed("PullRequest", "invalid", field="base")
    if head_sha is None:
        raise validation_failed("PullRequest", "invalid", field="head")
    if refusal == "exists":  # someone opened one from this branch a moment ago
        call.state.add_pull(
            call.owner,
            call.repo,
            title="Opened by hand",
            body=None,
            user="octocat",
            head_ref=head_ref,
            base_ref=base_ref,
            head_sha=head_sha,
            base_sha=base_sha,
        )
    if _open_pull_for(call, head_ref) is not None:
        raise validation_failed(
            "PullRequest",
            "custom",
            message=f"A pull request already exists for {call.owner}:{head_ref}.",
        )
    ahead = await run_in_threadpool(gitserver.divergence, call.bare, base_sha, head_sha)
    if head_ref == base_ref or ahead.commits == 0 or refusal == "no_diff":
        raise validation_failed(
            "PullRequest", "custom", message=f"No commits between {base_ref} and {head_ref}"
        )
    pull = call.state.add_pull(
        call.owner,
        call.repo,
        title=call.body["title"],
        body=call.body.get("body"),
        user=call.state.bot_login,
        head_ref=head_ref,
        base_ref=base_ref,
        head_sha=head_sha,
        base_sha=base_sha,
        draft=call.body.get("draft", False),
        maintainer_can_modify=call.body.get("maintainer_can_modify", False),
    )
    return Reply(201, call.render.pull(pull, await _live_stats(call, pull)))


def _pull(call: Call) -> Pull:
    pull = call.state.pulls.get((call.owner, call.repo, call.number("pull_number")))
    if pull is None:
        raise not_found()
    return pull


async def list_pulls(call: Call) -> Reply:
    wanted = call.query.get("state", "open")
    head = call.query.get("head")
    base = call.query.get("base")
    if head is not None and ":" not in head:
        call.state.violate("GET", f"/repos/{call.owner}/{call.repo}/pulls", "head needs owner:ref")
    with call.state.lock:
        pulls = [
            p
            for p in call.state.pulls.values()
            if (p.owner, p.repo) == (call.owner, call.repo)
            and (wanted == "all" or p.state == wanted)
            and (head is None or f"{p.owner}:{p.head_ref}" == head)
            and (base is None or p.base_ref == base)
        ]
    pulls.sort(key=lambda p: p.number, reverse=call.query.get("direction", "desc") == "desc")
    page, headers = _page(call, pulls, f"/repos/{call.owner}/{call.repo}/pulls")
    return Reply(
        200, [call.render.pull_simple(p, await _live_stats(call, p)) for p in page], headers
    )


async def get_pull(call: Call) -> Reply:
    pull = _pull(call)
    return Reply(200, call.render.pull(pull, await _live_stats(call, pull)))


async def update_pull(call: Call) -> Reply:
    pull = _pull(call)
    body = call.body
    if body.get("state") == "open" and _open_pull_for(call, pull.head_ref, pull.number):
        raise validation_failed(
            "PullRequest",
            "custom",
            message=f"A pull request already exists for {call.owner}:{pull.head_ref}.",
        )
    if (
        "base" in body
        and await run_in_threadpool(gitserver.branch_sha, call.bare, body["base"]) is None
    ):
        raise validation_failed("PullRequest", "invalid", field="base")
    with call.state.lock:
        issue = call.state.issues[(pull.owner, pull.repo, pull.number)]
        for key in ("title", "body"):
            if key in body:
                setattr(pull, key, body[key])
                setattr(issue, key, body[key])
        if "base" in body:
            pull.base_ref = body["base"]
        if "maintainer_can_modify" in body:
            pull.maintainer_can_modify = body["maintainer_can_modify"]
        if "state" in body:
            pull.state = issue.state = body["state"]
            pull.closed_at = issue.closed_at = now() if pull.state == "closed" else None
        pull.updated_at = issue.updated_at = now()
    return Reply(200, call.render.pull(pull, await _live_stats(call, pull)))


# --- misc -----------------------------------------------------------------------------------


async def get_rate_limit(call: Call) -> Reply:
    return Reply(200, call.render.rate_limit(len(call.state.requests)))


REPO = "/repos/{owner}/{repo}"
ISSUES_W = (("issues", "write"), ("pull_requests", "write"))
ISSUES_R = (("issues", "read"), ("pull_requests", "read"))
PULLS_W = (("pull_requests", "write"),)
PULLS_R = (("pull_requests", "read"),)
CHECKS_W = (("checks", "write"),)
CHECKS_R = (("checks", "read"),)
META = (("metadata", "read"),)

ENDPOINTS: list[Endpoint] = [
    Endpoint("GET", "/app", get_app, "app"),
    Endpoint(
        "GET",
        "/app/installations/{installation_id}",
        get_installation,
        "app",
    ),
    Endpoint(
        "POST",
        "/app/installations/{installation_id}/access_tokens",
        create_access_token,
        "app",
        body=m.AppInstallationsInstallationIdAccessTokensPostBody,
    ),
    Endpoint("GET", REPO + "/installation", get_repo_installation, "app"),
    Endpoint("GET", REPO, get_repo, "installation", META),
    Endpoint(
        "GET",
        REPO + "/collaborators/{username}/permission",
        get_permission,
        "installation",
        META,
    ),
    Endpoint(
        "GET",
        REPO + "/contents/{path:path}",
        get_content,
        "installation",
        (("contents", "read"),),
    ),
    Endpoint(
        "GET",
        REPO + "/compare/{basehead:path}",
        compare,
        "installation",
        (("contents", "read"),),
    ),
    Endpoint(
        "GET",
        REPO + "/issues/{issue_number}",
        get_issue,
        "installation",
        ISSUES_R,
    ),
    Endpoint(
        "GET",
        REPO + "/issues/{issue_number}/comments",
        list_comments,
        "installation",
        ISSUES_R,
    ),
    Endpoint(
        "POST",
        REPO + "/issues/{issue_number}/comments",
        create_comment,
        "installation",
        ISSUES_W,
        body=m.ReposOwnerRepoIssuesIssueNumberCommentsPostBody,
    ),
    Endpoint(
        "GET",
        REPO + "/issues/comments/{comment_id}",
        get_comment,
        "installation",
        ISSUES_R,
    ),
    Endpoint(
        "PATCH",
        REPO + "/issues/comments/{comment_id}",
        update_comment,
        "installation",
        ISSUES_W,
        body=m.ReposOwnerRepoIssuesCommentsCommentIdPatchBody,
    ),
    Endpoint(
        "POST",
        REPO + "/issues/comments/{comment_id}/reactions",
        react_to_comment,
        "installation",
        ISSUES_W,
        body=m.ReposOwnerRepoIssuesCommentsCommentIdReactionsPostBody,
    ),
    Endpoint(
        "POST",
        REPO + "/issues/{issue_number}/reactions",
        react_to_issue,
        "installation",
        ISSUES_W,
        body=m.ReposOwnerRepoIssuesIssueNumberReactionsPostBody,
    ),
    Endpoint(
        "POST",
        REPO + "/pulls/comments/{comment_id}/reactions",
        react_to_review_comment,
        "installation",
        PULLS_W,
        body=m.ReposOwnerRepoPullsCommentsCommentIdReactionsPostBody,
    ),
    Endpoint(
        "POST",
        REPO + "/pulls/{pull_number}/comments/{comment_id}/replies",
        reply_to_review_comment,
        "installation",
        PULLS_W,
        body=m.ReposOwnerRepoPullsPullNumberCommentsCommentIdRepliesPostBody,
    ),
    Endpoint(
        "POST",
        REPO + "/check-runs",
        create_check_run,
        "installation",
        CHECKS_W,
        body=m.ReposOwnerRepoCheckRunsPostBodyOneof0 | m.ReposOwnerRepoCheckRunsPostBodyOneof1,
    ),
    Endpoint(
        "PATCH",
        REPO + "/check-runs/{check_run_id}",
        update_check_run,
        "installation",
        CHECKS_W,
        body=m.ReposOwnerRepoCheckRunsCheckRunIdPatchBodyAnyof0
        | m.ReposOwnerRepoCheckRunsCheckRunIdPatchBodyAnyof1,
    ),
    Endpoint(
        "GET",
        REPO + "/check-runs/{check_run_id}",
        get_check_run,
        "installation",
        CHECKS_R,
    ),
    Endpoint(
        "GET",
        REPO + "/commits/{ref:path}/check-runs",
        list_check_runs_for_ref,
        "installation",
        CHECKS_R,
    ),
    Endpoint(
        "GET",
        REPO + "/check-suites/{check_suite_id}/check-runs",
        list_check_runs_for_suite,
        "installation",
        CHECKS_R,
    ),
    Endpoint(
        "POST",
        REPO + "/pulls",
        create_pull,
        "installation",
        PULLS_W,
        body=m.ReposOwnerRepoPullsPostBody,
    ),
    Endpoint(
        "GET",
        REPO + "/pulls",
        list_pulls,
        "installation",
        PULLS_R,
    ),
    Endpoint(
        "GET",
        REPO + "/pulls/{pull_number}",
        get_pull,
        "installation",
        PULLS_R,
    ),
    Endpoint(
        "PATCH",
        REPO + "/pulls/{pull_number}",
        update_pull,
        "installation",
        PULLS_W,
        body=m.ReposOwnerRepoPullsPullNumberPatchBody,
    ),
    Endpoint(
        "GET",
        REPO + "/git/ref/{ref:path}",
        get_ref,
        "installation",
        (("contents", "read"),),
    ),
    Endpoint(
        "POST",
        REPO + "/git/refs",
        create_ref,
        "installation",
        (("contents", "write"),),
        body=m.ReposOwnerRepoGitRefsPostBody,
    ),
    Endpoint(
        "PATCH",
        REPO + "/git/refs/{ref:path}",
        update_ref,
        "installation",
        (("contents", "write"),),
        body=m.ReposOwnerRepoGitRefsRefPatchBody,
    ),
    Endpoint(
        "DELETE",
        REPO + "/git/refs/{ref:path}",
        delete_ref,
        "installation",
        (("contents", "write"),),
    ),
    Endpoint("GET", REPO + "/branches", list_branches, "installation", (("contents", "read"),)),
    Endpoint("GET", "/rate_limit", get_rate_limit, "none"),
]


# The fields of each answer that Trimo reads (app/github/client.py): drift never touches them.
NEEDS: dict[str, frozenset[str]] = {
    "get_app": frozenset({"id", "slug"}),
    "create_access_token": frozenset({"token", "expires_at"}),
    "get_repo_installation": frozenset({"id"}),
    "get_installation": frozenset({"id"}),
    "get_repo": frozenset({"default_branch", "full_name"}),
    "get_permission": frozenset({"permission", "role_name"}),
    "get_content": frozenset({"type", "encoding", "content", "sha", "size"}),
    "get_ref": frozenset({"object.sha"}),
    "create_ref": frozenset({"object.sha"}),
    "update_ref": frozenset({"object.sha"}),
    "list_branches": frozenset({"[].name"}),
    "compare": frozenset(
        {
            "status",
            "ahead_by",
            "behind_by",
            "total_commits",
            "html_url",
            "files[].filename",
            "files[].status",
            "files[].additions",
            "files[].deletions",
            "files[].patch",
            "files[].previous_filename",
        }
    ),
    "get_issue": frozenset({"number", "title", "state"}),
    "create_comment": frozenset({"id"}),
    "get_comment": frozenset({"id", "body"}),
    "create_check_run": frozenset({"id"}),
    "list_check_runs_for_ref": frozenset({"check_runs[].id", "check_runs[].external_id"}),
    "list_check_runs_for_suite": frozenset({"check_runs[].name", "check_runs[].conclusion"}),
    "create_pull": frozenset({"number"}),
    "list_pulls": frozenset({"[].number"}),
    "get_pull": frozenset(
        {
            "number",
            "state",
            "title",
            "body",
            "head.ref",
            "head.sha",
            "head.repo.full_name",
            "base.ref",
            "base.repo.full_name",
        }
    ),
    "get_rate_limit": frozenset({"resources.core", "rate"}),
}
