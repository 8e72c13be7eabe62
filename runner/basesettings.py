"""What the App's and the runner's settings share: `TRIMO_` variables or `.env`, a `_FILE`
variant of every secret setting, and where Redis is.

`TRIMO_<NAME>_FILE=/path` reads the secret `TRIMO_<NAME>` from that file (a compose secret, a
systemd credential), so that it is in no process's environment or command line. An empty
file counts as unset, like an empty variable; a file that cannot be read is refused, with
its name and why.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from pydantic import SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from runner.errors import TrimoError
from runner.redisurl import parse as parse_redis_url
from runner.redisurl import with_password

PREFIX = "TRIMO_"
FILE_SUFFIX = "_FILE"
MAX_SECRET_BYTES = 64 * 1024
"""A secret file larger than this is a mistake (a wrong path), not a secret."""


class SettingsFileError(TrimoError, ValueError):
    """A `_FILE` setting cannot be used; a ValueError, as any other invalid setting."""


def secret_fields(settings_cls: type[BaseSettings]) -> list[str]:
    """The fields of `settings_cls` that hold a secret (and so have a `_FILE` variant)."""
    return [
        name
        for name, field in settings_cls.model_fields.items()
        if SecretStr in _types(field.annotation)
    ]


def file_variable(field: str) -> str:
    """`webhook_secret` → `TRIMO_WEBHOOK_SECRET_FILE`."""
    return f"{PREFIX}{field.upper()}{FILE_SUFFIX}"


def read_secret(variable: str, path: str) -> str | None:
    """The secret in the file `variable` names, without its final line break; None if empty."""
    try:
        with Path(path).open("rb") as file:
            data = file.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise SettingsFileError(
            f"{variable}: cannot read {path}: {exc.strerror or exc}",
            f"check the path, and that this service's user may read it; or unset {variable}",
        ) from None
    if len(data) > MAX_SECRET_BYTES:
        raise SettingsFileError(
            f"{variable}: {path} is larger than {MAX_SECRET_BYTES // 1024} KiB: not a secret",
            f"point {variable} at the file that holds only the secret",
        )
    try:
        text = data.decode().rstrip("\r\n")
    except UnicodeDecodeError:
        raise SettingsFileError(
            f"{variable}: {path} is not UTF-8 text",
            f"point {variable} at the file that holds only the secret",
        ) from None
    return text or None


class SecretFiles(PydanticBaseSettingsSource):
    """Secrets from the files their `_FILE` variables name, in the environment or `.env`."""

    def __init__(self, settings_cls: type[BaseSettings], *sources: PydanticBaseSettingsSource):
        super().__init__(settings_cls)
        self._variables: dict[str, str] = {}
        for source in reversed(sources):  # the first source wins, as in the settings chain
            if isinstance(source, EnvSettingsSource):
                self._variables.update(
                    {k.lower(): v for k, v in source.env_vars.items() if v is not None}
                )

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything happens in __call__

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for name in secret_fields(self.settings_cls):
            variable = file_variable(name)
            path = self._variables.get(variable.lower(), "")
            if not path:
                continue
            if self._variables.get(f"{PREFIX}{name}".lower()):
                plain = variable.removesuffix(FILE_SUFFIX)
                raise SettingsFileError(
                    f"both {plain} and {variable} are set",
                    f"keep one: {variable} keeps the secret out of the environment",
                )
            value = read_secret(variable, path)
            if value is not None:
                found[name] = value
        return found


class TrimoSettings(BaseSettings):
    """Settings from `TRIMO_` variables, `.env`, and the files `_FILE` variables name."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX, env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_password: SecretStr | None = None
    """Redis's password when TRIMO_REDIS_URL has none (best as TRIMO_REDIS_PASSWORD_FILE)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        files = SecretFiles(settings_cls, env_settings, dotenv_settings)
        return init_settings, files, env_settings, dotenv_settings, file_secret_settings

    @field_validator("redis_url")
    @classmethod
    def _redis_url_ok(cls, value: str) -> str:
        parse_redis_url(value)
        return value

    @model_validator(mode="after")
    def _redis_password_in_url(self) -> TrimoSettings:
        password = self.redis_password.get_secret_value() if self.redis_password else ""
        if password:
            self.redis_url = with_password(self.redis_url, password)
        return self


def _types(annotation: Any) -> tuple[Any, ...]:
    if get_origin(annotation) in (Union, types.UnionType):
        return get_args(annotation)
    return (annotation,)
