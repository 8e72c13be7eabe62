"""What a person asks from the dashboard: read from a form, never raising. Pure: no I/O.

A request travels to the App worker as a delivery of the `trimo_dashboard` event (which
GitHub never sends, and the webhook edge never takes), so it is handled, retried and
reported exactly as a comment command is.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Final, Literal

from pydantic import Field

from app.edge.payloads import RepoEvent
from app.github.tolerant import Tolerant
from runner.contract import AGENTS, MAX_ATTEMPTS
from runner.job import is_valid_branch_name

DASHBOARD_EVENT: Final = "trimo_dashboard"
MAX_PROMPT_CHARS: Final = 20_000
MAX_PATH_CHARS: Final = 1000
MAX_HUNK_CHARS: Final = 20_000
MAX_LINE: Final = 10_000_000

Action = Literal["stop", "retry", "run", "new", "pick"]


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
    attempts: int | None = Field(default=None, ge=1, le=MAX_ATTEMPTS)
    """Attempts of the prompt side by side (of each of `agents`); None: the config's."""
    agents: str = ""
    """Several agents, comma-separated: one attempt (`attempts`) of each."""
    attempt: int | None = Field(default=None, ge=1)
    """The attempt to keep (Pick)."""

    def agent_names(self) -> tuple[str, ...]:
        """`agents` as the run command takes them: known agents only, each once."""
        names = (name.strip() for name in self.agents.split(","))
        return tuple(dict.fromkeys(n for n in names if n in AGENTS))[:MAX_ATTEMPTS]


class DashboardEvent(RepoEvent):
    """A dashboard request as the App worker reads it (shaped like a repository event)."""

    action: str
    ask: DashboardAsk = Field(default_factory=DashboardAsk)


@dataclass(frozen=True)
class Attempts:
    """How many attempts of a prompt, of which agents (None and (): as configured)."""

    attempts: int | None = None
    agents: tuple[str, ...] = ()

    def ask(self) -> dict[str, str]:
        """The fields a dashboard request carries for them (none when as configured)."""
        asked = {"attempts": str(self.attempts)} if self.attempts is not None else {}
        return asked | ({"agents": ",".join(self.agents)} if self.agents else {})


@dataclass(frozen=True)
class FollowUp:
    prompt: str
    agent: str
    attempts: Attempts = Attempts()


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
    attempts: Attempts = Attempts()


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


def _attempts(form: Mapping[str, object], agent: str) -> Attempts | FormError:
    """The form's number of attempts and agents (`agents`: names, comma-separated)."""
    count = _text(form, "attempts")
    if count and not (count.isascii() and count.isdigit() and 1 <= int(count) <= MAX_ATTEMPTS):
        return FormError(f"Attempts: a whole number from 1 to {MAX_ATTEMPTS}.")
    names = [name.strip() for name in _text(form, "agents").split(",") if name.strip()]
    unknown = [name for name in names if name not in AGENTS]
    if unknown:
        return FormError(f"Unknown agent; pick from {', '.join(AGENTS)}.")
    if len(set(names)) != len(names):
        return FormError("An agent is named twice: ask for more attempts of it instead.")
    if agent and names:
        return FormError("Choose one agent, or several agents, not both.")
    attempts = int(count) if count else None
    if len(names) * (attempts or 1) > MAX_ATTEMPTS:
        return FormError(
            f"That is {len(names) * (attempts or 1)} attempts; at most {MAX_ATTEMPTS} can run."
        )
    return Attempts(attempts=attempts, agents=tuple(names))


def parse_follow_up(form: Mapping[str, object]) -> FollowUp | FormError:
    found = _prompt_and_agent(form)
    if isinstance(found, FormError):
        return found
    attempts = _attempts(form, found[1])
    if isinstance(attempts, FormError):
        return attempts
    return FollowUp(prompt=found[0], agent=found[1], attempts=attempts)


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
    attempts = _attempts(form, found[1])
    if isinstance(attempts, FormError):
        return attempts
    return NewPipeline(
        repo=repo, base_branch=base, prompt=found[0], agent=found[1], attempts=attempts
    )


def parse_pick(form: Mapping[str, object], known: Collection[int]) -> int | FormError:
    """The attempt to keep: one of `known` (the pipeline's attempt numbers)."""
    number = _text(form, "attempt")
    if not (number.isascii() and number.isdigit() and len(number) < 6) or int(number) not in known:
        return FormError("Which attempt? Pick one of this pipeline's attempts.")
    return int(number)


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
