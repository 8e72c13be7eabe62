"""State objects as GitHub JSON: the corpora examples with the stand-in's values written in.

Only what the stand-in's state knows is written in (ids, numbers, text, refs, states,
addresses). Everything else (labels, milestones, teams, licences...) stays as GitHub's
example has it, whether or not githubkit's models accept it.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

from tests.fakegithub.state import (
    CheckRun,
    FakeState,
    Installation,
    Issue,
    IssueComment,
    Pull,
    Reaction,
    Repo,
    ReviewComment,
    Token,
)
from tests.fakegithub.templates import example, host_pairs, rewrite

Json = dict[str, Any]

REACTION_CONTENTS = ("+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes")
APP_EVENTS = [
    "check_run",
    "check_suite",
    "issue_comment",
    "issues",
    "pull_request",
    "pull_request_review_comment",
]


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def node_id(kind: str, number: int) -> str:
    return f"{kind}_" + base64.b64encode(f"{kind}{number}".encode()).decode().rstrip("=")


@dataclass(frozen=True)
class PullStats:
    """What git says about a pull request's branch."""

    head_sha: str
    base_sha: str
    commits: int
    additions: int
    deletions: int
    changed_files: int


class Renderer:
    """Renders state for a stand-in reachable at `base` (e.g. http://127.0.0.1:8123)."""

    def __init__(self, state: FakeState, base: str) -> None:
        self.state = state
        self.base = base.rstrip("/")
        self.host = urlsplit(self.base).netloc
        self.pairs = host_pairs(self.base)

    # --- addresses -------------------------------------------------------------------

    def api_repo(self, owner: str, repo: str) -> str:
        return f"{self.base}/repos/{owner}/{repo}"

    def web_repo(self, owner: str, repo: str) -> str:
        return f"{self.base}/{owner}/{repo}"

    def clone_url(self, owner: str, repo: str) -> str:
        return f"{self.base}/{owner}/{repo}.git"

    # --- people and apps -------------------------------------------------------------

    def user(self, login: str) -> Json:
        user = self.state.user(login)
        quoted = quote(login)
        data: Json = rewrite(
            example("issues__create-comment.response.201.default")["user"],
            [
                ("/users/octocat", f"/users/{quoted}"),
                ("github.com/octocat", f"github.com/{quoted}"),
                *self.pairs,
            ],
        )
        data.update(
            login=login,
            id=user.id,
            node_id=node_id("U", user.id),
            avatar_url=f"{self.base}/avatars/u/{user.id}",
            type=user.type,
            site_admin=False,
        )
        if user.type == "Bot" and self.state.app is not None:
            data["html_url"] = f"{self.base}/apps/{self.state.app.slug}"
        return data

    def association(self, owner: str, repo: str, login: str) -> str:
        if login == owner:
            return "OWNER"
        if self.state.user(login).type == "Bot":
            return "NONE"
        if (owner, repo, login) in self.state.roles:
            role = self.state.role_of(owner, repo, login)
            return "COLLABORATOR" if role.permission != "none" else "NONE"
        return "NONE"

    def app(self) -> Json:
        app = self.state.app
        assert app is not None
        data: Json = rewrite(example("apps__get-authenticated.response.200.default"), self.pairs)
        data.update(
            id=app.id,
            slug=app.slug,
            client_id=app.client_id,
            node_id=node_id("A", app.id),
            owner=self.user(app.owner),
            name=app.name,
            description="",
            external_url=self.base,
            html_url=f"{self.base}/apps/{app.slug}",
            permissions=dict(self._installation_permissions()),
            events=list(APP_EVENTS),
        )
        return data

    def _installation_permissions(self) -> dict[str, str]:
        first = next(iter(self.state.installations.values()), None)
        return dict(first.permissions) if first else {"metadata": "read"}

    def installation(self, inst: Installation) -> Json:
        app = self.state.app
        assert app is not None
        account = self.user(inst.account)
        data: Json = rewrite(
            example("apps__get-repo-installation.response.200.default"), self.pairs
        )
        data.update(
            id=inst.id,
            account=account,
            repository_selection="all",
            access_tokens_url=f"{self.base}/app/installations/{inst.id}/access_tokens",
            repositories_url=f"{self.base}/installation/repositories",
            html_url=f"{self.base}/organizations/{inst.account}/settings/installations/{inst.id}",
            app_id=app.id,
            client_id=app.client_id,
            target_id=account["id"],
            target_type=account["type"],
            permissions=dict(inst.permissions),
            events=list(APP_EVENTS),
            created_at=iso(inst.created_at),
            updated_at=iso(inst.created_at),
            app_slug=app.slug,
        )
        if not inst.suspended:
            data.update(suspended_at=None, suspended_by=None)
        return data

    def token(self, token: Token) -> Json:
        data: Json = example("apps__create-installation-access-token.response.201.default")
        data.update(
            token=token.token,
            expires_at=iso(token.expires_at),
            permissions=dict(token.permissions),
            repository_selection="all" if token.repositories is None else "selected",
        )
        inst = self.state.installations[token.installation_id]
        if token.repositories is None:
            data.pop("repositories")
        else:
            data["repositories"] = [
                self.repo_simple(self.state.repos[(inst.account, name)])
                for name in token.repositories
            ]
        return data

    # --- repositories ----------------------------------------------------------------

    def _repo_fields(self, data: Json, repo: Repo) -> Json:
        full = repo.full_name
        data = rewrite(
            data, [("octocat/Hello-World", full), ("octocat/Hello-World-Template", full)]
        )
        data = rewrite(data, self.pairs)
        data.update(
            id=repo.id,
            node_id=node_id("R", repo.id),
            name=repo.name,
            full_name=full,
            owner=self.user(repo.owner),
            private=repo.private,
            html_url=self.web_repo(repo.owner, repo.name),
            description=None,
            fork=False,
            clone_url=self.clone_url(repo.owner, repo.name),
            git_url=f"git://{self.host}/{full}.git",
            ssh_url=f"git@{self.host}:{full}.git",
            svn_url=self.web_repo(repo.owner, repo.name),
            mirror_url=None,
            homepage=None,
            language=None,
            forks_count=0,
            forks=0,
            stargazers_count=0,
            watchers_count=0,
            watchers=0,
            size=1,
            default_branch=repo.default_branch,
            open_issues_count=0,
            open_issues=0,
            topics=[],
            visibility="private" if repo.private else "public",
            created_at=iso(repo.created_at),
            updated_at=iso(repo.created_at),
            pushed_at=iso(repo.created_at),
            permissions={
                "admin": False,
                "maintain": False,
                "push": True,
                "triage": True,
                "pull": True,
            },
        )
        return data

    def repo_simple(self, repo: Repo) -> Json:
        """The `Repository` shape (tokens, pull request heads)."""
        template = example("apps__create-installation-access-token.response.201.default")
        return self._repo_fields(template["repositories"][0], repo)

    def repo_full(self, repo: Repo) -> Json:
        """The `FullRepository` shape (GET /repos/{owner}/{repo})."""
        data = self._repo_fields(example("repos__get.response.200.default-response"), repo)
        for key in ("parent", "source"):
            data.pop(key, None)
        owner = self.user(repo.owner)
        if owner["type"] == "Organization":
            data["organization"] = owner
        else:
            data.pop("organization", None)
        data["network_count"] = 0
        data["subscribers_count"] = 0
        return data

    def permission(self, owner: str, repo: str, login: str) -> Json:
        """The documented shape: `user` has no `role_name` (githubkit's model wants one)."""
        role = self.state.role_of(owner, repo, login)
        data: Json = example(
            "repos__get-collaborator-permission-level.response.200"
            ".response-if-user-has-admin-permissions"
        )
        data.update(permission=role.permission, role_name=role.role_name, user=self.user(login))
        return data

    def content(
        self, owner: str, repo: str, path: str, ref: str, blob_sha: str, data: bytes
    ) -> Json:
        encoded = base64.b64encode(data).decode()
        wrapped = "".join(encoded[i : i + 60] + "\n" for i in range(0, len(encoded), 60))
        api = self.api_repo(owner, repo)
        url = f"{api}/contents/{quote(path)}?ref={quote(ref, safe='')}"
        html = f"{self.web_repo(owner, repo)}/blob/{quote(ref)}/{quote(path)}"
        git = f"{api}/git/blobs/{blob_sha}"
        return {
            "type": "file",
            "encoding": "base64",
            "size": len(data),
            "name": path.rsplit("/", 1)[-1],
            "path": path,
            "content": wrapped,
            "sha": blob_sha,
            "url": url,
            "git_url": git,
            "html_url": html,
            "download_url": f"{self.base}/raw/{owner}/{repo}/{quote(ref)}/{quote(path)}",
            "_links": {"self": url, "git": git, "html": html},
        }

    # --- issues, comments and reactions ------------------------------------------------

    def rollup(self, url: str, reactions: list[Reaction]) -> Json:
        counts = {content: 0 for content in REACTION_CONTENTS}
        for reaction in reactions:
            counts[reaction.content] += 1
        return {"url": url, "total_count": len(reactions), **counts}

    def reaction(self, reaction: Reaction) -> Json:
        data: Json = example("reactions__create-for-issue-comment.response.201.default")
        data.update(
            id=reaction.id,
            node_id=node_id("REA", reaction.id),
            user=self.user(reaction.user),
            content=reaction.content,
            created_at=iso(reaction.created_at),
        )
        return data

    def issue(self, issue: Issue) -> Json:
        api = self.api_repo(issue.owner, issue.repo)
        web = self.web_repo(issue.owner, issue.repo)
        n = issue.number
        comments = self.state.comments_on(n, issue.owner, issue.repo)
        data: Json = rewrite(example("issues__create.response.201.default"), self.pairs)
        data.update(
            id=issue.id,
            node_id=node_id("I", issue.id),
            url=f"{api}/issues/{n}",
            repository_url=api,
            labels_url=f"{api}/issues/{n}/labels{{/name}}",
            comments_url=f"{api}/issues/{n}/comments",
            events_url=f"{api}/issues/{n}/events",
            html_url=f"{web}/{'pull' if issue.is_pull else 'issues'}/{n}",
            number=n,
            state=issue.state,
            state_reason="completed" if issue.state == "closed" else None,
            title=issue.title,
            body=issue.body,
            user=self.user(issue.user),
            comments=len(comments),
            closed_at=iso(issue.closed_at),
            created_at=iso(issue.created_at),
            updated_at=iso(issue.updated_at),
            author_association=self.association(issue.owner, issue.repo, issue.user),
            reactions=self.rollup(f"{api}/issues/{n}/reactions", issue.reactions),
        )
        if issue.is_pull:
            data["pull_request"] = {
                "url": f"{api}/pulls/{n}",
                "html_url": f"{web}/pull/{n}",
                "diff_url": f"{web}/pull/{n}.diff",
                "patch_url": f"{web}/pull/{n}.patch",
                "merged_at": None,
            }
        else:
            data.pop("pull_request", None)
        return data

    def comment(self, comment: IssueComment) -> Json:
        api = self.api_repo(comment.owner, comment.repo)
        issue = self.state.issues.get((comment.owner, comment.repo, comment.issue_number))
        kind = "pull" if issue is not None and issue.is_pull else "issues"
        data: Json = rewrite(example("issues__create-comment.response.201.default"), self.pairs)
        data.update(
            id=comment.id,
            node_id=node_id("IC", comment.id),
            url=f"{api}/issues/comments/{comment.id}",
            html_url=(
                f"{self.web_repo(comment.owner, comment.repo)}/{kind}/{comment.issue_number}"
                f"#issuecomment-{comment.id}"
            ),
            body=comment.body,
            user=self.user(comment.user),
            created_at=iso(comment.created_at),
            updated_at=iso(comment.updated_at),
            issue_url=f"{api}/issues/{comment.issue_number}",
            author_association=self.association(comment.owner, comment.repo, comment.user),
            performed_via_github_app=self.app() if comment.via_app else None,
            reactions=self.rollup(
                f"{api}/issues/comments/{comment.id}/reactions", comment.reactions
            ),
        )
        return data

    def review_comment(self, comment: ReviewComment) -> Json:
        api = self.api_repo(comment.owner, comment.repo)
        web = self.web_repo(comment.owner, comment.repo)
        url = f"{api}/pulls/comments/{comment.id}"
        html = f"{web}/pull/{comment.pull_number}#discussion_r{comment.id}"
        pull_url = f"{api}/pulls/{comment.pull_number}"
        data: Json = rewrite(
            example("pulls__create-reply-for-review-comment.response.201.default"), self.pairs
        )
        data.update(
            url=url,
            pull_request_review_id=comment.id,
            id=comment.id,
            node_id=node_id("PRRC", comment.id),
            path=comment.path,
            commit_id=comment.commit_id,
            original_commit_id=comment.commit_id,
            user=self.user(comment.user),
            body=comment.body,
            created_at=iso(comment.created_at),
            updated_at=iso(comment.updated_at),
            html_url=html,
            pull_request_url=pull_url,
            author_association=self.association(comment.owner, comment.repo, comment.user),
            _links={
                "self": {"href": url},
                "html": {"href": html},
                "pull_request": {"href": pull_url},
            },
            reactions=self.rollup(f"{url}/reactions", comment.reactions),
        )
        if comment.in_reply_to_id is None:
            data.pop("in_reply_to_id", None)
        else:
            data["in_reply_to_id"] = comment.in_reply_to_id
        return data

    # --- checks ------------------------------------------------------------------------

    def check_run(self, run: CheckRun) -> Json:
        api = self.api_repo(run.owner, run.repo)
        output = {
            "title": run.output.get("title"),
            "summary": run.output.get("summary"),
            "text": run.output.get("text"),
            "annotations_count": len(run.output.get("annotations", [])),
            "annotations_url": f"{api}/check-runs/{run.id}/annotations",
        }
        repo = self.state.repos[(run.owner, run.repo)]
        ref = {"id": repo.id, "url": api, "name": repo.name}
        with self.state.lock:
            open_pulls = list(self.state.pulls.values())
        pulls = [
            {
                "url": f"{api}/pulls/{p.number}",
                "id": p.id,
                "number": p.number,
                "head": {"ref": p.head_ref, "sha": p.head_sha, "repo": ref},
                "base": {"ref": p.base_ref, "sha": p.base_sha, "repo": ref},
            }
            for p in open_pulls
            if (p.owner, p.repo) == (run.owner, run.repo)
            and p.state == "open"
            and p.head_sha == run.head_sha
        ]
        data: Json = rewrite(example("checks__get.response.200.default"), self.pairs)
        data.update(
            id=run.id,
            head_sha=run.head_sha,
            node_id=node_id("CR", run.id),
            external_id=run.external_id or "",
            url=f"{api}/check-runs/{run.id}",
            html_url=f"{self.web_repo(run.owner, run.repo)}/runs/{run.id}",
            details_url=run.details_url,
            status=run.status,
            conclusion=run.conclusion,
            started_at=iso(run.started_at),
            completed_at=iso(run.completed_at),
            output=output,
            name=run.name,
            check_suite={"id": run.check_suite_id},
            app=run.app or self.app(),
            pull_requests=pulls,
        )
        return data

    # --- pull requests -----------------------------------------------------------------

    def pull(self, pull: Pull, stats: PullStats) -> Json:
        """The full `PullRequest` shape."""
        data = self.pull_simple(pull, stats)
        data.update(
            merged=False,
            mergeable=pull.state == "open" or None,
            rebaseable=pull.state == "open" or None,
            mergeable_state="clean" if pull.state == "open" else "unknown",
            merged_by=None,
            comments=len(self.state.comments_on(pull.number, pull.owner, pull.repo)),
            review_comments=len(self.state.review_comments_on(pull.number, pull.owner, pull.repo)),
            maintainer_can_modify=pull.maintainer_can_modify,
            commits=stats.commits,
            additions=stats.additions,
            deletions=stats.deletions,
            changed_files=stats.changed_files,
        )
        return data

    def pull_simple(self, pull: Pull, stats: PullStats) -> Json:
        """The `PullRequestSimple` shape (list results)."""
        api = self.api_repo(pull.owner, pull.repo)
        web = self.web_repo(pull.owner, pull.repo)
        n = pull.number
        api_pull = f"{api}/pulls/{n}"
        repo = self.repo_simple(self.state.repos[(pull.owner, pull.repo)])
        owner = self.user(pull.owner)
        links = {
            "self": api_pull,
            "html": f"{web}/pull/{n}",
            "issue": f"{api}/issues/{n}",
            "comments": f"{api}/issues/{n}/comments",
            "review_comments": f"{api_pull}/comments",
            "review_comment": f"{api}/pulls/comments{{/number}}",
            "commits": f"{api_pull}/commits",
            "statuses": f"{api}/statuses/{stats.head_sha}",
        }
        full = rewrite(example("pulls__create.response.201.default"), self.pairs)
        simple_keys = set(example("pulls__list.response.200.default")[0])
        data: Json = {key: value for key, value in full.items() if key in simple_keys}
        data.update(
            url=api_pull,
            id=pull.id,
            node_id=node_id("PR", pull.id),
            html_url=f"{web}/pull/{n}",
            diff_url=f"{web}/pull/{n}.diff",
            patch_url=f"{web}/pull/{n}.patch",
            issue_url=f"{api}/issues/{n}",
            commits_url=f"{api_pull}/commits",
            review_comments_url=f"{api_pull}/comments",
            review_comment_url=f"{api}/pulls/comments{{/number}}",
            comments_url=f"{api}/issues/{n}/comments",
            statuses_url=f"{api}/statuses/{stats.head_sha}",
            number=n,
            state=pull.state,
            title=pull.title,
            user=self.user(pull.user),
            body=pull.body,
            created_at=iso(pull.created_at),
            updated_at=iso(pull.updated_at),
            closed_at=iso(pull.closed_at),
            merged_at=None,
            merge_commit_sha=None,
            head={
                "label": f"{pull.owner}:{pull.head_ref}",
                "ref": pull.head_ref,
                "sha": stats.head_sha,
                "user": owner,
                "repo": repo,
            },
            base={
                "label": f"{pull.owner}:{pull.base_ref}",
                "ref": pull.base_ref,
                "sha": stats.base_sha,
                "user": owner,
                "repo": repo,
            },
            _links={key: {"href": href} for key, href in links.items()},
            author_association=self.association(pull.owner, pull.repo, pull.user),
            draft=pull.draft,
        )
        return data

    def rate_limit(self, used: int) -> Json:
        data: Json = example("rate-limit__get.response.200.default")
        reset = int(time.time()) + 3600
        for bucket in [*data["resources"].values(), data["rate"]]:
            bucket["reset"] = reset
        data["resources"]["core"].update(used=used, remaining=max(0, 5000 - used), limit=5000)
        data["rate"].update(used=used, remaining=max(0, 5000 - used), limit=5000)
        return data
