"""Parse a comment into one typed result: a command, a reply to post, or ignore.

Pure: no I/O. `parse_comment` never raises, whatever the comment holds.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Literal, TypeAlias

from app.conversation.naming import (
    MAX_ATTEMPT_NUMBER,
    inline_code,
    is_agent_name,
    is_runner_label,
)
from runner.contract import MAX_ATTEMPTS, NETWORK_MODES, NetworkMode, RunMode

MAX_TIMEOUT_MINUTES = 1440

USAGE = """\
**How to use Trimo**

Start a comment with one of these commands:

```text
/trimo run [--agent NAME] [--on LABEL] [--timeout MINUTES] [--network none|allowlist|bridge] PROMPT
/trimo run --attempts N PROMPT           N attempts side by side, ranked when all have ended
/trimo run --agents claude,codex PROMPT  one attempt of each agent
/trimo pick N    keep attempt N: its commits become this pipeline's branch
/trimo discover [same options] [WHAT TO FOCUS ON]
/trimo stop      stop the current run (every attempt of it)
/trimo retry     run the last prompt again (every attempt of it)
/trimo status    show how this pipeline is doing
/trimo preview   run this pipeline's branch live, one link away (`preview stop` stops it)
/trimo help      show this message
```

- The prompt may span several lines; options go on the first line, before the prompt.
- `/trimo discover` is read-only: the agent investigates the issue against the code and answers
  with its findings and a step-by-step plan; nothing is pushed. `/trimo run implement the plan
  above` then carries it out.
- `--timeout` is in minutes (1 to 1440); `--` ends the options.
- `--network allowlist` (the default) reaches the agent's API and the hosts in `allowed_hosts`
  of `.github/trimo.yml`; `none` has no network; `bridge` reaches everything.
- Mentioning the app at the start of a comment, followed by a prompt, works like `/trimo run`.
"""

SUBCOMMANDS: tuple[str, ...] = (
    "run", "discover", "stop", "retry", "status", "preview", "pick", "help",
)  # fmt: skip
RUN_OPTIONS: tuple[str, ...] = (
    "--agent", "--agents", "--attempts", "--on", "--timeout", "--network",
)  # fmt: skip

ReplyCode = Literal[
    "empty_prompt",
    "unknown_command",
    "unknown_option",
    "missing_value",
    "repeated_option",
    "bad_value",
    "bad_preview",
    "bad_pick",
]


@dataclass(frozen=True)
class RunCommand:
    """Start a run with `prompt`; options left as None come from the repository's config.

    A `discover` run is read-only and answers with a plan; its `prompt` is what to focus on
    (may be empty), and the issue or pull request itself is the request."""

    prompt: str
    agent: str | None = None
    label: str | None = None
    timeout_minutes: int | None = None
    network: NetworkMode | None = None
    mode: RunMode = "code"
    attempts: int | None = None
    """Attempts of the prompt side by side (of each agent in `agents`); None: the config's."""
    agents: tuple[str, ...] = ()
    """One attempt (`attempts` each) of every agent named, instead of the configured one."""


@dataclass(frozen=True)
class PickCommand:
    """Keep attempt `number`: its commits become the pipeline's branch."""

    number: int


@dataclass(frozen=True)
class StopCommand:
    """Stop the pipeline's active run."""


@dataclass(frozen=True)
class RetryCommand:
    """Run the pipeline's last prompt again."""


@dataclass(frozen=True)
class StatusCommand:
    """List the pipeline's runs."""


@dataclass(frozen=True)
class PreviewCommand:
    """Start (or refresh) the pipeline's preview; with `stop`, stop it."""

    stop: bool = False


@dataclass(frozen=True)
class HelpCommand:
    """Reply with the usage."""


@dataclass(frozen=True)
class Reply:
    """A command that could not be understood: post `text` (markdown) and run nothing."""

    text: str
    code: ReplyCode


@dataclass(frozen=True)
class Ignore:
    """Not addressed to Trimo."""


ParseResult: TypeAlias = (
    RunCommand
    | StopCommand
    | RetryCommand
    | StatusCommand
    | PreviewCommand
    | PickCommand
    | HelpCommand
    | Reply
    | Ignore
)

_OPTION_TOKEN = re.compile(r"--[A-Za-z][A-Za-z0-9_-]*(?:=.*)?", re.DOTALL)
_TIMEOUT_RE = re.compile(r"[0-9]{1,9}")
_INDENTED_CODE_COLUMNS = 4


class _Problem(Exception):
    """Internal: a mistyped command, turned into a `Reply`."""

    def __init__(self, code: ReplyCode, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


def parse_comment(body: str, app_slug: str) -> ParseResult:
    """Read a comment: `/trimo …` commands and `@<app_slug> PROMPT` mentions; else Ignore."""
    try:
        return _parse(body, app_slug)
    except _Problem as problem:
        return Reply(text=f"{problem.text}\n\n{USAGE}", code=problem.code)


def _parse(body: str, app_slug: str) -> ParseResult:
    text = body.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")
    lines = text.split("\n")
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None or _indent_columns(lines[first]) >= _INDENTED_CODE_COLUMNS:
        return Ignore()
    head = lines[first].lstrip()
    rest = "\n".join(lines[first + 1 :])

    command_match = re.match(r"/trimo(?=\s|$)", head)
    if command_match:
        return _parse_command(head[command_match.end() :], rest)
    mention = _mention_length(head, app_slug)
    if mention:
        return _parse_mention(head[mention:], rest)
    return Ignore()


def _indent_columns(line: str) -> int:
    columns = 0
    for char in line:
        if char == " ":
            columns += 1
        elif char == "\t":
            columns += 4 - columns % 4
        else:
            break
    return columns


def _mention_length(head: str, app_slug: str) -> int:
    """Length of a leading `@slug` / `@slug[bot]` (and a `:` or `,` after it), else 0."""
    slug = app_slug.strip().lstrip("@").removesuffix("[bot]")
    if not slug:
        return 0
    pattern = rf"@{re.escape(slug)}(?:\[bot\])?(?![A-Za-z0-9_\-\[])[:,]?"
    match = re.match(pattern, head, re.IGNORECASE)
    return match.end() if match else 0


def _parse_mention(line_rest: str, rest: str) -> ParseResult:
    prompt = _prompt_text(line_rest.lstrip() + "\n" + rest)
    if not prompt:
        return HelpCommand()
    word = prompt.lower().rstrip(".!")
    if word in {"stop", "retry", "status", "help"}:
        return _simple_command(word)
    return RunCommand(prompt=prompt)


def _parse_command(line_rest: str, rest: str) -> ParseResult:
    words = line_rest.split(maxsplit=1)
    if not words:
        return HelpCommand()
    word = words[0]
    if word in ("run", "discover"):
        after_word = line_rest[line_rest.index(word) + len(word) :]
        return _parse_run(after_word, rest, "discover" if word == "discover" else "code")
    if word == "preview":
        return _parse_preview(line_rest.split()[1:])
    if word == "pick":
        return _parse_pick(line_rest.split()[1:])
    if word in SUBCOMMANDS:
        return _simple_command(word)
    guesses = difflib.get_close_matches(word.lower(), SUBCOMMANDS, n=1)
    hint = f" Did you mean `/trimo {guesses[0]}`?" if guesses else ""
    raise _Problem("unknown_command", f"Unknown command {inline_code(word, 40)}.{hint}")


def _parse_preview(words: list[str]) -> PreviewCommand:
    if not words:
        return PreviewCommand()
    if [word.lower() for word in words] == ["stop"]:
        return PreviewCommand(stop=True)
    raise _Problem(
        "bad_preview",
        f"`/trimo preview` takes nothing, or `stop`; not {inline_code(' '.join(words), 40)}.",
    )


def _parse_pick(words: list[str]) -> PickCommand:
    number = words[0].lstrip("#") if len(words) == 1 else ""
    if not _TIMEOUT_RE.fullmatch(number) or not 1 <= int(number) <= MAX_ATTEMPT_NUMBER:
        raise _Problem(
            "bad_pick",
            "`/trimo pick` takes the number of one attempt, as its table shows it "
            f"(like `/trimo pick 2`); not {inline_code(' '.join(words) or 'nothing', 40)}.",
        )
    return PickCommand(number=int(number))


def _simple_command(word: str) -> ParseResult:
    if word == "stop":
        return StopCommand()
    if word == "retry":
        return RetryCommand()
    if word == "status":
        return StatusCommand()
    return HelpCommand()


def _parse_run(line: str, rest: str, mode: RunMode) -> RunCommand:
    """Options from the command line, then the prompt: the rest of that line and below."""
    values: dict[str, str] = {}
    tokens = list(re.finditer(r"\S+", line))
    prompt_start = len(line)
    index = 0
    while index < len(tokens):
        token = tokens[index].group()
        if token == "--":
            prompt_start = tokens[index].end()
            break
        if not _OPTION_TOKEN.fullmatch(token):
            prompt_start = tokens[index].start()
            break
        name, has_value, value = token.partition("=")
        if name not in RUN_OPTIONS:
            raise _Problem("unknown_option", _unknown_option(name))
        if has_value and not value:
            raise _Problem("missing_value", f"The option {inline_code(name)} needs a value.")
        if name in values:
            raise _Problem(
                "repeated_option", f"The option {inline_code(name)} is given more than once."
            )
        if not has_value:
            index += 1
            if index >= len(tokens):
                raise _Problem("missing_value", f"The option {inline_code(name)} needs a value.")
            value = tokens[index].group()
        values[name] = value
        index += 1

    prompt = _prompt_text(line[prompt_start:].lstrip() + "\n" + rest)
    if not prompt and mode == "code":
        raise _Problem(
            "empty_prompt", "Please tell me what to do: `/trimo run` needs a prompt after it."
        )
    agents = _agents(values.get("--agents"))
    attempts = _attempts(values.get("--attempts"))
    if agents and "--agent" in values:
        raise _Problem("bad_value", "Give `--agent` or `--agents`, not both.")
    if mode == "discover" and (agents or attempts):
        raise _Problem(
            "bad_value", "Attempts are for coding runs: `/trimo discover` takes one agent."
        )
    return RunCommand(
        prompt=prompt,
        agent=_agent(values.get("--agent")),
        label=_label(values.get("--on")),
        timeout_minutes=_timeout(values.get("--timeout")),
        network=_network(values.get("--network")),
        mode=mode,
        attempts=attempts,
        agents=agents,
    )


def _unknown_option(name: str) -> str:
    guesses = difflib.get_close_matches(name.lower(), RUN_OPTIONS, n=1)
    hint = f" Did you mean {inline_code(guesses[0])}?" if guesses else ""
    return f"Unknown option {inline_code(name, 40)}.{hint}"


def _agent(value: str | None) -> str | None:
    if value is None:
        return None
    if not is_agent_name(value.lower()):
        raise _Problem(
            "bad_value",
            f"{inline_code(value, 40)} is not an agent name: use a lowercase letter followed by "
            "up to 31 letters, digits, `-` or `_`.",
        )
    return value.lower()


def _agents(value: str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names or len(names) > MAX_ATTEMPTS:
        raise _Problem(
            "bad_value",
            f"`--agents` takes 1 to {MAX_ATTEMPTS} agent names separated by commas, like "
            f"`--agents claude,codex`; not {inline_code(value, 40)}.",
        )
    agents = tuple(a for name in names if (a := _agent(name)) is not None)
    if len(set(agents)) != len(agents):
        raise _Problem(
            "bad_value",
            "`--agents` names an agent twice: use `--attempts` for several of one agent.",
        )
    return agents


def _attempts(value: str | None) -> int | None:
    if value is None:
        return None
    count = int(value) if _TIMEOUT_RE.fullmatch(value) else 0
    if not 1 <= count <= MAX_ATTEMPTS:
        raise _Problem(
            "bad_value",
            f"`--attempts` must be a whole number from 1 to {MAX_ATTEMPTS}, "
            f"not {inline_code(value, 40)}.",
        )
    return count


def _label(value: str | None) -> str | None:
    if value is None:
        return None
    if not is_runner_label(value):
        raise _Problem(
            "bad_value",
            f"{inline_code(value, 40)} is not a runner label: use up to 64 letters, digits, "
            "`.`, `-` or `_`.",
        )
    return value


def _timeout(value: str | None) -> int | None:
    if value is None:
        return None
    minutes = int(value) if _TIMEOUT_RE.fullmatch(value) else 0
    if not 1 <= minutes <= MAX_TIMEOUT_MINUTES:
        raise _Problem(
            "bad_value",
            f"The timeout must be a whole number of minutes from 1 to {MAX_TIMEOUT_MINUTES}, "
            f"not {inline_code(value, 40)}.",
        )
    return minutes


def _network(value: str | None) -> NetworkMode | None:
    if value is None:
        return None
    lowered = value.lower()
    for mode in NETWORK_MODES:
        if lowered == mode:
            return mode
    raise _Problem(
        "bad_value",
        f"The network must be `none`, `allowlist` or `bridge`, not {inline_code(value, 40)}.",
    )


def _prompt_text(text: str) -> str:
    """`text` without its outer blank lines and trailing spaces; inner lines kept as written."""
    lines = text.split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines).rstrip()
