"""Logs for the long-running commands: readable on a terminal, JSON lines elsewhere.

`TRIMO_LOG_FORMAT` picks the format: `auto` (the default: rich on a terminal, JSON
otherwise), `rich` or `json`. Every record carries the delivery id, run id, pipeline and
repository of the work it belongs to, set with `log_context` where a delivery or a run is
handled (contextvars, so concurrent tasks keep their own). Every record is scrubbed of the
secrets made known with `hide` and of anything shaped like a credential, in both formats.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Final, Literal, TextIO
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from runner.scrub import Scrubber

LogFormat = Literal["auto", "rich", "json"]
CONTEXT_FIELDS: Final = ("delivery_id", "run_id", "pipeline", "repo")
"""The fields every record carries (None outside a delivery or a run)."""
MASK: Final = "***"

_CREDENTIAL_SHAPES: Final = tuple(
    (clue, re.compile(pattern, re.DOTALL))
    for clue, pattern in (
        (
            "PRIVATE KEY",
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)",
        ),
        ("_", r"\bgh[pousr]_[A-Za-z0-9]{20,}"),  # GitHub tokens: installation, OAuth, user, PAT
        ("github_pat_", r"\bgithub_pat_[A-Za-z0-9_]{20,}"),
        ("sk-", r"\bsk-[A-Za-z0-9_-]{20,}"),  # Anthropic and OpenAI API keys
        ("@", r"(?<=://)[^/@\s:]*:[^/@\s]+(?=@)"),  # user:password in a URL
        ("uthorization", r"(?i:(?<=authorization: )(?:bearer|token|basic) \S+)"),
    )
)
"""Credentials recognised by their shape, each with a clue a text must hold to be searched."""

_context: ContextVar[Mapping[str, str]] = ContextVar("trimo_log_context", default={})  # noqa: B039
_scrubber = Scrubber([], mask=MASK)


class LogSettings(BaseSettings):
    """`TRIMO_LOG_FORMAT`, read before any other setting (a mistake in those is logged)."""

    model_config = SettingsConfigDict(env_prefix="TRIMO_", env_file=".env", extra="ignore")

    log_format: LogFormat = "auto"


def _merged(fields: Mapping[str, str | None]) -> Mapping[str, str]:
    unknown = set(fields) - set(CONTEXT_FIELDS)
    if unknown:
        raise ValueError(f"unknown log context fields: {sorted(unknown)}")
    return {**_context.get(), **{k: v for k, v in fields.items() if v is not None}}


@contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """Records logged inside carry `fields` (of `CONTEXT_FIELDS`) besides the outer ones."""
    token = _context.set(_merged(fields))
    try:
        yield
    finally:
        _context.reset(token)


def bind(**fields: str | None) -> None:
    """Add `fields` to the current context until it ends (a task's, or a `log_context`)."""
    _context.set(_merged(fields))


def current_context() -> dict[str, str | None]:
    found = _context.get()
    return {name: found.get(name) for name in CONTEXT_FIELDS}


def hide(*secrets: str) -> None:
    """Mask these values (and their URL- and base64-encoded forms) in every record; a secret
    of several lines (a PEM key) line by line too."""
    for secret in secrets:
        lines = [line for line in secret.splitlines() if len(line) >= 16]
        # PEM armour is no secret, and masking it would hide the key's shape from `scrub`.
        _scrubber.add(secret, *(line for line in lines if not line.startswith("-----")))


def hide_settings(settings: BaseModel) -> None:
    """Mask every secret field of `settings`, and the password of every URL field."""
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            hide(value.get_secret_value())
        elif isinstance(value, str) and "://" in value:
            try:
                password = urlsplit(value).password
            except ValueError:
                continue
            if password:
                hide(password)


def scrub(text: str) -> str:
    """`text` without the secrets made known and without credential-shaped strings."""
    text = _scrubber.scrub(text)
    for clue, shape in _CREDENTIAL_SHAPES:
        if clue in text:
            text = shape.sub(MASK, text)
    return text


def message_of(record: logging.LogRecord) -> str:
    """The record's message; a format its arguments do not fit is shown, not raised."""
    try:
        return record.getMessage()
    except Exception:  # a logging call's mistake must not stop the caller
        return f"{record.msg!r} with arguments {record.args!r}"


class ContextFilter(logging.Filter):
    """Adds the context fields to each record and scrubs its message and traceback.

    The message is rendered here, once, so that both formats print the scrubbed text.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in current_context().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        record.msg = scrub(message_of(record))
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, the context fields, and error."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": scrub(message_of(record)),
        }
        for name in CONTEXT_FIELDS:
            line[name] = getattr(record, name, None)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["error"] = scrub(record.exc_text)
        if record.stack_info:
            line["stack"] = scrub(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def chosen_format(requested: LogFormat, stream: TextIO) -> Literal["rich", "json"]:
    if requested != "auto":
        return requested
    isatty = getattr(stream, "isatty", None)
    return "rich" if isatty is not None and isatty() else "json"


def make_handler(requested: LogFormat, stream: TextIO) -> logging.Handler:
    """The handler for `requested` on `stream`, with the context filter."""
    handler: logging.Handler
    if chosen_format(requested, stream) == "rich":
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(show_path=False, console=Console(file=stream))
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    return handler


def configure(stream: TextIO | None = None) -> None:
    """Log INFO and above to `stream` (stderr) in the format `TRIMO_LOG_FORMAT` asks for."""
    out = stream or sys.stderr
    problem = None
    try:
        requested = LogSettings().log_format
    except ValidationError:
        requested = "auto"
        problem = "TRIMO_LOG_FORMAT must be auto, rich or json; using auto"
    logging.basicConfig(level=logging.INFO, handlers=[make_handler(requested, out)], force=True)
    logging.getLogger("arq").setLevel(logging.WARNING)
    if problem:
        logging.getLogger("trimo").warning(problem)
