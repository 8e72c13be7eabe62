"""What a person asks from the dashboard: read from a form, never raising. Pure: no I/O.

A request travels to the App worker as a delivery of the `trimo_dashboard` event (which
GitHub never sends, and the webhook edge never takes), so it is handled, retried and
reported exactly as a comment command is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from pydantic import Field

from app.edge.payloads import RepoEvent
from app.github.tolerant import Tolerant
from runner.contract import AGENTS
from runner.job import is_valid_branch_name

DASHBOARD_EVENT: Final = "trimo_dashboard"
MAX_PROMPT_CHARS: Final = 20_000
MAX_PATH_CHARS: Final = 1000
MAX_HUNK_CHARS: Final = 20_000
MAX_LINE: Final = 10_000_000

Action = Literal["stop", "retry", "run", "new"]


class DashboardAsk(Tolerant):
    """The fields of a dashboard request besides the repository and who asked."""

    pipeline: str = ""
    run_id: str = ""
    prompt: str = ""
    agent: str = ""
    base_branch: str = ""
    title: str = ""
    path: str = ""
    """A line comment's file (with `line` and `diff_hunk`): the run gets it as a review
    comment's context."""
    line: int | None = None
    diff_hunk: str = ""


class DashboardEvent(RepoEvent):
    """A dashboard request as the App worker reads it (shaped like a repository event)."""

    action: str
    ask: DashboardAsk = Field(default_factory=DashboardAsk)


@dataclass(frozen=True)
class FollowUp:
    prompt: str
    agent: str


@dataclass(frozen=True)
class LineComment:
    """A comment on a line of the diff: a follow-up given that file, line and hunk."""

    prompt: str
    path: str
    line: int
    diff_hunk: str


@dataclass(frozen=True)
class NewPipeline:
    repo: str
    base_branch: str
    prompt: str
    agent: str


@dataclass(frozen=True)
class FormError:
    message: str


def _text(form: Mapping[str, object], name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _prompt_and_agent(form: Mapping[str, object]) -> tuple[str, str] | FormError:
    prompt = _text(form, "prompt").replace("\r\n", "\n")
    agent = _text(form, "agent")
    if not prompt:
        return FormError("Write a prompt: what should the agent do?")
    if len(prompt) > MAX_PROMPT_CHARS:
        return FormError(f"The prompt is too long ({len(prompt):,} of {MAX_PROMPT_CHARS:,}).")
    if agent and agent not in AGENTS:
        return FormError(f"Unknown agent; pick one of {', '.join(AGENTS)}.")
    return prompt, agent


def parse_follow_up(form: Mapping[str, object]) -> FollowUp | FormError:
    found = _prompt_and_agent(form)
    if isinstance(found, FormError):
        return found
    return FollowUp(prompt=found[0], agent=found[1])


def parse_new_pipeline(
    form: Mapping[str, object], repos: Mapping[str, str]
) -> NewPipeline | FormError:
    """`repos`: the repositories (lowercased) the viewer may start pipelines on → their name."""
    repo = repos.get(_text(form, "repo").lower())
    if repo is None:
        return FormError("Pick one of your repositories.")
    base = _text(form, "base_branch")
    if base and not is_valid_branch_name(base):
        return FormError("That base branch name is not one Trimo can use.")
    found = _prompt_and_agent(form)
    if isinstance(found, FormError):
        return found
    return NewPipeline(repo=repo, base_branch=base, prompt=found[0], agent=found[1])


def parse_line_comment(form: Mapping[str, object]) -> LineComment | FormError:
    found = _prompt_and_agent(form)
    if isinstance(found, FormError):
        return found
    path = _text(form, "path")
    line = _text(form, "line")
    hunk = _text(form, "diff_hunk").replace("\r\n", "\n")
    if not path or len(path) > MAX_PATH_CHARS or "\n" in path:
        return FormError("A line comment needs the file it is about.")
    if not (line.isascii() and line.isdigit() and len(line) < 10) or not 0 < int(line) <= MAX_LINE:
        return FormError("A line comment needs the line it is about.")
    if len(hunk) > MAX_HUNK_CHARS:
        hunk = hunk[-MAX_HUNK_CHARS:]  # the end is the commented line
    return LineComment(prompt=found[0], path=path, line=int(line), diff_hunk=hunk)
