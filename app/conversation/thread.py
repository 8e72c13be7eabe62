"""A conversation: who asked Trimo, on which issue or pull request, and how to answer them.

Answers are reactions and replies rendered from `templates/github/`; each goes through
`Delivery.once`, so a retried delivery repeats none. Opening a conversation records where
it is on the delivery's trace, so a delivery that fails later can still say so there.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field

from app.conversation.naming import inline_code
from app.conversation.policy import role_allows
from app.conversation.repoconfig import CONFIG_PATH, ConfigError, RepoConfig, parse_repo_config
from app.edge.payloads import RepoEvent, Repository
from app.github.client import FileUnreadable, PullInfo, ReactionContent, ReactionTarget, RepoAPI
from app.github.installations import installation_for_repo
from app.runs.pipelines import CommentKind
from app.services import Asked, Delivery, Services
from runner.job import ReviewContext
from runner.templating import render

log = logging.getLogger("trimo.app")


@dataclass(frozen=True)
class Thread:
    """The issue or pull request a command is about."""

    repo: Repository
    installation_id: int
    number: int
    is_pull: bool
    state: str = "open"
    title: str = ""
    body: str = ""
    """The issue's or pull request's description (a discovery run's request)."""
    pull: PullInfo | None = None
    """Known from the payload (review comments); else fetched when needed."""
    review: ReviewContext | None = None
    """Where a review comment points: it travels with the run, for the agent."""

    @property
    def kind(self) -> str:
        return "pull request" if self.is_pull else "issue"


@dataclass(frozen=True)
class Source:
    """Who asked, and where to react: a comment, the issue itself, or nothing (a button)."""

    user: str
    target: ReactionTarget | None = None
    target_id: int | None = None
    association: str = ""
    """The author's association with the repository, as the comment's payload says."""

    @property
    def likely_writer(self) -> bool:
        """An owner, member or collaborator: most often allowed to command (a guess for
        what may go ahead of the permission check, never the check itself)."""
        return self.association in ("OWNER", "MEMBER", "COLLABORATOR")

    @property
    def comment_kind(self) -> CommentKind | None:
        if self.target == "issue_comment" or self.target == "review_comment":
            return self.target
        return None


@dataclass(frozen=True)
class Conversation:
    """One delivery's exchange with a person on one issue or pull request."""

    delivery: Delivery
    api: RepoAPI
    thread: Thread
    source: Source
    unsaid: list[str] = field(default_factory=list)
    """Replies with no thread to go to (a pipeline started from the dashboard has none yet):
    the caller shows them where it can."""
    said: list[str] = field(default_factory=list)
    """Every reply, posted or not, in order (the dashboard shows its answers too)."""

    @property
    def services(self) -> Services:
        return self.delivery.services

    async def react(self, content: ReactionContent) -> None:
        source = self.source
        if source.target is None or source.target_id is None:
            return
        target, target_id = source.target, source.target_id

        async def make() -> None:
            await self.api.react(target, target_id, content)

        await self.delivery.once(f"react:{content}", make)

    async def reply(self, template: str, step: str = "reply", **context: object) -> None:
        """Post a comment rendered from `templates/github/<template>` on the thread."""
        body = render(f"github/{template}", user=self.source.user, **context)
        self.said.append(body)
        if not self.thread.number:
            self.unsaid.append(body)
            return
        await self.delivery.once(step, lambda: self.api.comment(self.thread.number, body))


async def open_conversation(
    delivery: Delivery,
    event: RepoEvent,
    source: Source,
    *,
    number: int,
    is_pull: bool,
    state: str = "open",
    title: str = "",
    body: str = "",
    pull: PullInfo | None = None,
    review: ReviewContext | None = None,
) -> Conversation | None:
    """A conversation about issue or pull request `number`; None without an installation."""
    installation_id = (
        event.installation.id
        if event.installation is not None
        else await installation_for_repo(delivery.services.redis, event.repository.full_name)
    )
    if installation_id is None:
        log.warning(
            "delivery %s (%s): no installation for %s; ignored",
            delivery.delivery_id,
            delivery.event,
            event.repository.full_name,
        )
        return None
    delivery.trace.asked = Asked(installation_id, event.repository.full_name, number, source.user)
    api = await delivery.services.github.repo(installation_id, event.repository.full_name)
    thread = Thread(
        repo=event.repository,
        installation_id=installation_id,
        number=number,
        is_pull=is_pull,
        state=state,
        title=title,
        body=body,
        pull=pull,
        review=review,
    )
    return Conversation(delivery=delivery, api=api, thread=thread, source=source)


async def load_config(api: RepoAPI, default_branch: str) -> RepoConfig | ConfigError:
    """The repository's `.github/trimo.yml` on its default branch, or what is wrong with it."""
    try:
        text = await api.read_file(CONFIG_PATH, default_branch)
    except FileUnreadable as exc:
        return ConfigError(str(exc))
    try:
        return parse_repo_config(text)
    except ConfigError as exc:
        return exc


async def asker_role(conv: Conversation) -> str | None:
    """The role on the repository of whoever asked; None for nobody GitHub knows."""
    return await conv.api.role_of(conv.source.user) if conv.source.user else None


async def config_and_role(
    conv: Conversation, *, run_asked: bool = False
) -> tuple[RepoConfig | ConfigError, str | None]:
    """The repository's config and the asker's role: two independent reads, made at once.

    When a run is asked for, a token for the repository is minted beside them, so that the
    run is queued after this one round trip; it stays in the App's memory, given to no
    runner unless the run is accepted (`Dispatch.prefetch`). A likely writer's comment
    gets its 👀 beside them too (one who turns out not to be one sees 👀, then 👎).
    """
    thread, dispatch = conv.thread, conv.services.pipelines.dispatch
    config_read, role_read = load_config(conv.api, thread.repo.default_branch), asker_role(conv)
    if not run_asked:
        config, role = await asyncio.gather(config_read, role_read)
        return config, role
    config, role, _, _ = await asyncio.gather(
        config_read,
        role_read,
        dispatch.prefetch(thread.installation_id, thread.repo.full_name),
        conv.react("eyes") if conv.source.likely_writer else asyncio.sleep(0),
    )
    return config, role


async def authorise(conv: Conversation, config: RepoConfig | ConfigError, role: str | None) -> bool:
    """Whether the sender, of `role`, may command Trimo here; if not, 👎 and say so."""
    minimum = config.min_permission if isinstance(config, RepoConfig) else "write"
    if role_allows(role, minimum):
        return True
    log.info(
        "delivery %s: %s (%s) may not command %s (needs %s)",
        conv.delivery.delivery_id,
        conv.source.user,
        role,
        conv.thread.repo.full_name,
        minimum,
    )
    await conv.react("-1")
    await conv.reply("refused_permission.md.j2", needed=minimum, role=role)
    return False


async def report_config_error(conv: Conversation, error: ConfigError) -> None:
    await conv.reply(
        "config_error.md.j2",
        message=error.message,
        branch=inline_code(conv.thread.repo.default_branch),
    )


def fenced(text: str, info: str = "") -> str:
    """`text` in a fenced code block whose fence no line of it can close."""
    fence = fence_for(text)
    return f"{fence}{info}\n{text}\n{fence}"


def fence_for(text: str) -> str:
    longest = max((len(run) for run in re.findall(r"`{3,}", text)), default=0)
    return "`" * max(3, longest + 1)
