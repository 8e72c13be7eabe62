"""Every secret setting has a `_FILE` variant (compose secrets, systemd credentials), read
from the environment or `.env`; a file that cannot be used is one clear line, not a trace."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from app.settings import AppSettings
from runner.basesettings import SettingsFileError, file_variable, secret_fields
from runner.settings import RunnerSettings

SECRET = "s3cret-value-9f2c"


@pytest.fixture(autouse=True)
def no_trimo_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("TRIMO_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_the_secrets_the_issue_names_have_file_variants() -> None:
    app = {file_variable(name) for name in secret_fields(AppSettings)}
    runner = {file_variable(name) for name in secret_fields(RunnerSettings)}
    assert {
        "TRIMO_WEBHOOK_SECRET_FILE",
        "TRIMO_REDIS_PASSWORD_FILE",
        "TRIMO_GITHUB_CLIENT_SECRET_FILE",
        "TRIMO_SESSION_SECRET_FILE",
        "TRIMO_METRICS_TOKEN_FILE",
        "TRIMO_GITHUB_PRIVATE_KEY_FILE",
    } <= app
    assert {
        "TRIMO_REDIS_PASSWORD_FILE",
        "TRIMO_ANTHROPIC_API_KEY_FILE",
        "TRIMO_OPENAI_API_KEY_FILE",
        "TRIMO_CLAUDE_CODE_OAUTH_TOKEN_FILE",
    } <= runner


CASES = [(AppSettings, name) for name in secret_fields(AppSettings) if name != "redis_password"]
CASES += [
    (RunnerSettings, name) for name in secret_fields(RunnerSettings) if name != "redis_password"
]


@pytest.mark.parametrize(("cls", "name"), CASES, ids=lambda x: getattr(x, "__name__", x))
def test_every_secret_is_read_from_its_file(
    cls: type[BaseSettings], name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "secret"
    secret.write_text(SECRET + "\n")  # `echo … > file` leaves a line break
    monkeypatch.setenv(file_variable(name), str(secret))
    value = getattr(cls(), name)
    assert value is not None and value.get_secret_value() == SECRET


def test_a_file_variable_in_dotenv_is_read(tmp_path: Path) -> None:
    (tmp_path / "webhook").write_text(SECRET)
    (tmp_path / ".env").write_text(f"TRIMO_WEBHOOK_SECRET_FILE={tmp_path / 'webhook'}\n")
    assert AppSettings().require_webhook_secret() == SECRET


def test_an_empty_file_or_variable_counts_as_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "empty").write_text("\n")
    monkeypatch.setenv("TRIMO_WEBHOOK_SECRET_FILE", str(tmp_path / "empty"))
    monkeypatch.setenv("TRIMO_ANTHROPIC_API_KEY_FILE", str(tmp_path / "empty"))
    assert AppSettings().webhook_secret is None
    assert RunnerSettings().anthropic_api_key is None
    # An empty variable beside a file is not "both set": systemd units set the file.
    monkeypatch.setenv("TRIMO_ANTHROPIC_API_KEY", "")
    (tmp_path / "key").write_text(SECRET)
    monkeypatch.setenv("TRIMO_ANTHROPIC_API_KEY_FILE", str(tmp_path / "key"))
    assert RunnerSettings().secrets_for("claude")["ANTHROPIC_API_KEY"].get_secret_value() == SECRET


def test_a_secret_set_twice_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "webhook").write_text(SECRET)
    monkeypatch.setenv("TRIMO_WEBHOOK_SECRET_FILE", str(tmp_path / "webhook"))
    (tmp_path / ".env").write_text("TRIMO_WEBHOOK_SECRET=other\n")
    both = "both TRIMO_WEBHOOK_SECRET and TRIMO_WEBHOOK_SECRET_FILE are set"
    with pytest.raises(SettingsFileError, match=both):
        AppSettings()


@pytest.mark.parametrize("kind", ["missing", "directory", "huge", "binary"])
def test_a_file_that_cannot_be_used_is_named(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / kind
    if kind == "directory":
        path.mkdir()
    elif kind == "huge":
        path.write_bytes(b"x" * (1024 * 1024))
    elif kind == "binary":
        path.write_bytes(b"\xff\xfe\x00secret")
    monkeypatch.setenv("TRIMO_SESSION_SECRET_FILE", str(path))
    with pytest.raises(SettingsFileError) as caught:
        AppSettings()
    assert caught.value.message.startswith(f"TRIMO_SESSION_SECRET_FILE: {path}") or (
        f"TRIMO_SESSION_SECRET_FILE: cannot read {path}" in caught.value.message
    )
    assert caught.value.hint
    assert isinstance(caught.value, ValueError)  # every caller's invalid-settings path


def test_the_redis_password_goes_into_a_url_without_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "redis").write_text("p@ss/word:1\n")
    monkeypatch.setenv("TRIMO_REDIS_PASSWORD_FILE", str(tmp_path / "redis"))
    monkeypatch.setenv("TRIMO_REDIS_URL", "rediss://redis.example.com:6380/2?ssl_cert_reqs=none")
    for settings in (AppSettings(), RunnerSettings()):
        assert settings.redis_url == (
            "rediss://:p%40ss%2Fword%3A1@redis.example.com:6380/2?ssl_cert_reqs=none"
        )
    from runner.redisurl import parse

    target = parse(RunnerSettings().redis_url)
    assert target.password == "p@ss/word:1" and target.hosts == (("redis.example.com", 6380),)
    monkeypatch.setenv("TRIMO_REDIS_URL", "redis://user:other@redis.example.com/0")
    with pytest.raises(ValueError, match="keep one") as caught:
        RunnerSettings()
    assert "other" not in str(caught.value)


def test_the_commands_say_what_is_wrong_without_a_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIMO_")}
    env.update(
        TRIMO_GITHUB_APP_ID="1",
        TRIMO_WEBHOOK_SECRET_FILE=str(tmp_path / "nowhere"),
        TRIMO_ANTHROPIC_API_KEY_FILE=str(tmp_path / "nowhere"),
        TRIMO_CACHE_DIR=str(tmp_path / "cache"),
        COLUMNS="200",
    )
    for command in (["serve"], ["runner"], ["run", "hello"]):
        done = subprocess.run(
            [sys.executable, "-m", "app.ops.cli", *command],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 1, done.stdout + done.stderr
        assert "Traceback" not in done.stderr
        assert f"cannot read {tmp_path / 'nowhere'}" in done.stderr, done.stderr
