"""Logs: JSON lines off a terminal with the work's context, rich on one, never a secret."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest
from pydantic import SecretStr
from rich.logging import RichHandler
from rich.text import Text

from app.settings import AppSettings
from runner import logs
from runner.settings import RunnerSettings
from tests.fakegithub import generate_key_pair

WEBHOOK_SECRET = "whsec-5f2b9c0e7d1a4e3b"
OAUTH_CLIENT_SECRET = "0auth-cl1ent-s3cret-9d8c7b6a5f4e3d2c1b0a"
INSTALLATION_TOKEN = "ghs_16C7e42F292c6912E7710c838347Ae178B4a"
ANTHROPIC_KEY = "sk-ant-api03-Zq9xY8wV7uT6sR5qP4oN3mL2kJ1iH0g"
OPENAI_KEY = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx0123456789"
REDIS_PASSWORD = "r3dis-pa55word-7e6d"


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True

    def text(self) -> str:
        """What a person reads: the colours taken out."""
        return Text.from_ansi(self.getvalue()).plain


@pytest.fixture
def logger(monkeypatch: pytest.MonkeyPatch) -> Iterator[logging.Logger]:
    """A logger of its own; the handlers it gets are removed afterwards."""
    monkeypatch.delenv("TRIMO_LOG_FORMAT", raising=False)
    monkeypatch.setenv("COLUMNS", "400")  # rich wraps lines at the terminal's width
    logger = logging.getLogger("trimo.test-logs")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger
    logger.handlers.clear()


def attach(logger: logging.Logger, requested: logs.LogFormat, stream: io.StringIO) -> None:
    logger.handlers.clear()
    logger.addHandler(logs.make_handler(requested, stream))


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_json_line_carries_the_delivery_run_pipeline_and_repository(
    logger: logging.Logger,
) -> None:
    out = io.StringIO()
    attach(logger, "auto", out)  # not a terminal: JSON
    logger.info("outside any work")
    with logs.log_context(delivery_id="d-1", repo="octo-org/widgets"):
        with logs.log_context(run_id="r-7", pipeline="octo-org.widgets.3"):
            logger.warning("run %s goes", "r-7")
        logger.info("back to the delivery")

    outside, inside, after = json_lines(out)
    assert outside["message"] == "outside any work"
    assert {k: outside[k] for k in logs.CONTEXT_FIELDS} == dict.fromkeys(logs.CONTEXT_FIELDS)
    assert inside["message"] == "run r-7 goes" and inside["level"] == "warning"
    assert inside["logger"] == "trimo.test-logs"
    assert (inside["delivery_id"], inside["run_id"], inside["pipeline"], inside["repo"]) == (
        "d-1",
        "r-7",
        "octo-org.widgets.3",
        "octo-org/widgets",
    )
    assert after["delivery_id"] == "d-1" and after["run_id"] is None
    assert str(inside["time"]).endswith("+00:00")


async def test_concurrent_tasks_keep_their_own_context(logger: logging.Logger) -> None:
    out = io.StringIO()
    attach(logger, "json", out)

    async def work(run_id: str) -> None:
        with logs.log_context(run_id=run_id):
            await asyncio.sleep(0.01)
            logs.bind(pipeline=f"p-{run_id}")
            await asyncio.sleep(0.01)
            logger.info("done %s", run_id)

    await asyncio.gather(work("a"), work("b"), work("c"))
    seen = {(line["run_id"], line["pipeline"], line["message"]) for line in json_lines(out)}
    assert seen == {("a", "p-a", "done a"), ("b", "p-b", "done b"), ("c", "p-c", "done c")}


def test_an_unknown_context_field_is_a_mistake() -> None:
    with pytest.raises(ValueError, match="unknown log context"), logs.log_context(user="x"):
        pass


def test_on_a_terminal_the_logs_are_rich_as_before(logger: logging.Logger) -> None:
    out = Tty()
    attach(logger, "auto", out)
    handler = logger.handlers[0]
    assert isinstance(handler, RichHandler)
    with logs.log_context(run_id="r-1"):
        logger.info("runner ready: labels default, 2 at a time")
    text = out.text()
    assert "INFO" in text and "runner ready: labels default, 2 at a time" in text
    assert not text.lstrip().startswith("{") and "run_id" not in text
    assert ".py:" not in text  # no source path column, as before (show_path=False)


def test_log_format_json_wins_even_on_a_terminal(
    logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRIMO_LOG_FORMAT", "json")
    out = Tty()
    logs.configure(out)
    try:
        logging.getLogger("trimo.test-logs.child").propagate = True
        logging.getLogger("trimo.other").info("hello")
        assert json_lines(out)[-1]["message"] == "hello"
    finally:
        logging.getLogger().handlers.clear()


def test_a_bad_log_format_is_said_and_auto_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIMO_LOG_FORMAT", "xml")
    out = io.StringIO()
    logs.configure(out)
    try:
        lines = json_lines(out)
    finally:
        logging.getLogger().handlers.clear()
    assert lines[-1]["level"] == "warning"
    assert "TRIMO_LOG_FORMAT must be auto, rich or json" in str(lines[-1]["message"])


def secrets_everywhere(logger: logging.Logger, pem: str) -> None:
    """Log every kind of secret, as is, inside URLs, headers, tracebacks and arguments."""
    logger.info("the App's key is %s", pem)
    logger.info("key line: %s", pem.splitlines()[3])
    logger.info("webhook secret %s and oauth secret %s", WEBHOOK_SECRET, OAUTH_CLIENT_SECRET)
    logger.info("cloning https://x-access-token:%s@github.com/o/r.git", INSTALLATION_TOKEN)
    logger.info("Authorization: token %s", INSTALLATION_TOKEN)
    logger.info("agent env ANTHROPIC_API_KEY=%s OPENAI_API_KEY=%s", ANTHROPIC_KEY, OPENAI_KEY)
    logger.info("Redis at redis://:%s@10.0.0.5:6379/0", REDIS_PASSWORD)
    logger.info("Redis at rediss://trimo:%s@redis.internal/1", REDIS_PASSWORD)
    try:
        raise RuntimeError(f"GitHub refused {INSTALLATION_TOKEN} for {WEBHOOK_SECRET}")
    except RuntimeError:
        logger.exception("minting failed with %s", OAUTH_CLIENT_SECRET)


@pytest.mark.parametrize("log_format", ["json", "rich"])
def test_no_secret_reaches_either_format(
    logger: logging.Logger, log_format: logs.LogFormat
) -> None:
    pem, _public = generate_key_pair()
    app_settings = AppSettings(
        _env_file=None,
        github_private_key=SecretStr(pem),
        webhook_secret=SecretStr(WEBHOOK_SECRET),
        redis_url=f"redis://:{REDIS_PASSWORD}@10.0.0.5:6379/0",
    )
    runner_settings = RunnerSettings(
        _env_file=None,
        anthropic_api_key=SecretStr(ANTHROPIC_KEY),
        openai_api_key=SecretStr(OPENAI_KEY),
    )
    logs.hide_settings(app_settings)
    logs.hide_settings(runner_settings)
    logs.hide(OAUTH_CLIENT_SECRET)  # a secret known only at run time
    out = Tty() if log_format == "rich" else io.StringIO()
    attach(logger, log_format, out)

    secrets_everywhere(logger, pem)

    text = out.text() if isinstance(out, Tty) else out.getvalue()
    assert "minting failed" in text and "RuntimeError" in text and "cloning https://" in text
    assert "***" in text
    if log_format == "json":
        assert all(isinstance(line, dict) for line in json_lines(out))
    else:
        assert not text.lstrip().startswith("{")
    secrets = [WEBHOOK_SECRET, OAUTH_CLIENT_SECRET, INSTALLATION_TOKEN, ANTHROPIC_KEY]
    secrets += [OPENAI_KEY, REDIS_PASSWORD, *(line for line in pem.splitlines()[1:-1])]
    for secret in secrets:
        assert secret not in text, f"{secret[:12]}… reached the {log_format} logs"
        assert secret[:16] not in text, f"a part of {secret[:12]}… reached the {log_format} logs"


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("token ghp_" + "a1B2" * 9 + " used", "token *** used"),
        ("pat github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz", "pat ***"),
        ("key sk-ant-api03-" + "x" * 40, "key ***"),
        ("GET https://bob:hunter2-pass@example.com/x", "GET https://***@example.com/x"),
        ("header authorization: Bearer abc.def.ghi", "header authorization: ***"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIE\nabc\n-----END RSA PRIVATE KEY-----", "***"),
        ("cut -----BEGIN PRIVATE KEY-----\nMIIEvQIBADAN", "cut ***"),
        (
            "run_id octo.widgets.7-abc pushed to trimo/7-x",
            "run_id octo.widgets.7-abc pushed to trimo/7-x",
        ),
        ("git@github.com:o/r.git and sk-short", "git@github.com:o/r.git and sk-short"),
    ],
)
def test_credentials_are_known_by_their_shape(text: str, kept: str) -> None:
    assert logs.scrub(text) == kept


@pytest.mark.parametrize("log_format", ["json", "rich"])
def test_a_logging_mistake_is_shown_not_raised(
    logger: logging.Logger, log_format: logs.LogFormat
) -> None:
    out = Tty() if log_format == "rich" else io.StringIO()
    attach(logger, log_format, out)
    logger.info("run %s took %d s", "r-1")  # one argument short
    text = out.text() if isinstance(out, Tty) else out.getvalue()
    assert "run %s took %d s" in text and "r-1" in text
