"""Runner and local-mode settings: environment variables prefixed `TRIMO_`, or `.env`; each
secret also as `TRIMO_<NAME>_FILE` (runner/basesettings.py)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from runner.agents import ADAPTERS
from runner.agents.endpoints import endpoint_of
from runner.basesettings import TrimoSettings
from runner.contract import (
    ATTEMPTS_KEEP_DAYS_DEFAULT,
    KEPT_MAX_DEFAULT,
    MAX_ATTEMPTS,
    MAX_ATTEMPTS_DEFAULT,
)
from runner.disk import parse_size
from runner.engine import EngineConfig
from runner.errors import TrimoError
from runner.eventcap import RUN_LOG_MAX_DEFAULT
from runner.handoff import Limits
from runner.network.egress import upstream_from_env
from runner.policy import RunnerPolicy, split_list
from runner.previews.links import Links


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "trimo"


class RunnerSettings(TrimoSettings):
    """Settings for `trimo run` and `trimo runner`."""

    cache_dir: Path = Field(default_factory=_default_cache_dir)
    image: str = "trimo-agent:latest"
    agent: str = "claude"
    timeout_minutes: float = Field(default=30, gt=0, le=24 * 60)
    network: Literal["none", "allowlist", "bridge"] = "allowlist"
    upstream_proxy: str | None = None
    """A proxy the egress proxy chains to (else this host's HTTPS_PROXY, if set)."""
    memory: str = "4g"
    cpus: float = Field(default=2.0, gt=0)
    pids: int = Field(default=1024, ge=16)
    agent_uid: int = 1000
    """The uid the agent runs as in its container when Trimo itself runs as root."""
    stop_grace_seconds: float = 3.0
    disk: str = "10g"
    """Each pipeline's disk (workspace, home and run files), and each preview's, as a
    filesystem of this size; 0 for none. Needs root and loop devices."""
    home_ttl_days: float = Field(default=14, gt=0)
    """Pipelines (workspace, home, disk) unused for this long are deleted."""
    max_bundle: str = "1g"
    """The most an agent may hand over from one run, as a git bundle."""
    run_log_max: str = RUN_LOG_MAX_DEFAULT
    """The most one run's output lines take in Redis, across its streams; the lines past it
    are counted, not kept."""
    setup_cache_max: str = "20g"
    """The most this runner's setup cache keeps (entries of `setup:`); least recently used
    entries go past it."""
    kept_max: str = KEPT_MAX_DEFAULT
    """The most a pipeline's kept commits (refused, or not pushed) may take in Redis, where
    every runner reaches them, as bundles; beyond it they stay on the runner that made them."""
    policy_max_attempts: int = Field(default=MAX_ATTEMPTS_DEFAULT, ge=1, le=MAX_ATTEMPTS)
    """`trimo run --attempts`: the most attempts of one prompt at once on this machine (the
    App reads the same variable for its own cap)."""
    attempts_keep_days: float = Field(default=ATTEMPTS_KEEP_DAYS_DEFAULT, gt=0)
    """`trimo pick`: how long after a pick the other attempts' branches stay, and a later
    pick may still switch to one of them."""

    anthropic_api_key: SecretStr | None = None
    openai_api_key: SecretStr | None = None
    claude_code_oauth_token: SecretStr | None = None
    """A Claude subscription token (`claude setup-token`), given as CLAUDE_CODE_OAUTH_TOKEN."""
    codex_auth_file: Path | None = None
    """Codex's ChatGPT sign-in (`~/.codex/auth.json`), copied into each Codex run's home."""
    codex_config_file: Path | None = None
    """A Codex `config.toml` (model providers, base URLs), copied into each Codex run's home;
    its providers' hosts join the run's allowlist."""
    anthropic_base_url: str | None = None
    """Given to agents that call Anthropic's API as ANTHROPIC_BASE_URL (a gateway or proxy);
    its host joins the run's allowlist."""

    runner_id: str = Field(default_factory=socket.gethostname)
    runner_labels: str = "default"
    runner_concurrency: int = Field(default=2, ge=1, le=64)
    runner_warm: int | None = Field(default=None, ge=0, le=64)
    """How many sandboxes to keep started ahead, so runs begin without waiting for Docker
    (runner.warm); the concurrency unless set, 0 for none."""
    drain_seconds: float = Field(default=60, ge=0)
    """On SIGTERM, how long running runs may go on before they are stopped and saved."""
    runner_allowed_repos: str = ""
    runner_allowed_images: str = ""
    runner_allowed_networks: str = "none,allowlist,bridge"
    runner_allowed_hosts: str = ""
    runner_max_timeout_minutes: float = 24 * 60
    runner_preview_url: str = ""
    """Where people reach this runner's previews; previews are served when set. A host per
    preview (recommended): `https://*.previews.example.com`; one host: `https://host`."""
    runner_preview_listen: str = "127.0.0.1:8090"
    """Where the preview proxy listens (host:port); put TLS in front of it."""
    runner_max_previews: int = Field(default=4, ge=1, le=100)
    runner_preview_max_hours: float = Field(default=8, gt=0, le=7 * 24)

    @field_validator("anthropic_base_url")
    @classmethod
    def _base_url_ok(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        try:
            endpoint_of(value, "TRIMO_ANTHROPIC_BASE_URL")
        except TrimoError as exc:
            raise ValueError(exc.message) from exc
        return value.strip()

    @field_validator("disk", "max_bundle", "kept_max", "run_log_max", "setup_cache_max")
    @classmethod
    def _size_ok(cls, value: str) -> str:
        parse_size(value)
        return value

    @field_validator("run_log_max")
    @classmethod
    def _some_log(cls, value: str) -> str:
        if parse_size(value) < 1 << 20:
            raise ValueError(f"TRIMO_RUN_LOG_MAX is {value!r}: a run needs at least 1m of log")
        return value

    def engine_config(self, runner_id: str, keep_ledger: bool) -> EngineConfig:
        return EngineConfig(
            cache_dir=self.cache_dir,
            runner_id=runner_id,
            agent_uid=self.agent_uid,
            stop_grace_seconds=self.stop_grace_seconds,
            keep_ledger=keep_ledger,
            disk_bytes=parse_size(self.disk),
            limits=Limits(bundle_bytes=parse_size(self.max_bundle)),
            upstream_proxy=self.upstream(),
            codex_auth_file=self.codex_auth_file,
            codex_config_file=self.codex_config_file,
            anthropic_base_url=self.anthropic_base_url,
            setup_cache_bytes=parse_size(self.setup_cache_max),
        )

    def preview_listen(self) -> tuple[str, int]:
        host, _, port = self.runner_preview_listen.rpartition(":")
        return host.strip("[]") or "127.0.0.1", int(port)

    @field_validator("runner_preview_listen")
    @classmethod
    def _listen_ok(cls, value: str) -> str:
        _host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("should be host:port, like 127.0.0.1:8090")
        return value

    @field_validator("runner_preview_url")
    @classmethod
    def _url_ok(cls, value: str) -> str:
        return str(Links.parse(value)) if value else ""

    def labels(self) -> list[str]:
        """TRIMO_RUNNER_LABELS, one label each."""
        return [x.strip() for x in self.runner_labels.split(",") if x.strip()]

    def runner_policy(self) -> RunnerPolicy:
        return RunnerPolicy(
            allowed_repos=split_list(self.runner_allowed_repos),
            allowed_images=split_list(self.runner_allowed_images),
            allowed_networks=split_list(self.runner_allowed_networks),
            allowed_hosts=split_list(self.runner_allowed_hosts),
            max_timeout_minutes=self.runner_max_timeout_minutes,
        )

    def secrets_for(self, agent: str) -> dict[str, SecretStr]:
        """The API keys this machine gives to `agent` (only the variables it reads)."""
        adapter = ADAPTERS.get(agent)
        wanted = adapter.secret_env if adapter is not None else ()
        return {k: v for k, v in self.agent_secrets().items() if k in wanted}

    def agent_secrets(self) -> dict[str, SecretStr]:
        """The API keys this machine gives to agents, by the variable the agent reads."""
        given = {
            "ANTHROPIC_API_KEY": self.anthropic_api_key,
            "OPENAI_API_KEY": self.openai_api_key,
            "CLAUDE_CODE_OAUTH_TOKEN": self.claude_code_oauth_token,
        }
        # An empty key (`TRIMO_ANTHROPIC_API_KEY=` in runner.env) is no key.
        return {k: v for k, v in given.items() if v is not None and v.get_secret_value()}

    def upstream(self) -> str | None:
        """The upstream proxy URL for the egress proxy, if this host must use one."""
        return upstream_from_env(self.upstream_proxy)

    def credentials(self) -> dict[str, list[str]]:
        """For each agent, the credentials this machine gives it (for `trimo doctor`)."""
        secrets = self.agent_secrets()
        found: dict[str, list[str]] = {}
        for name, adapter in sorted(ADAPTERS.items()):
            have = [f"TRIMO_{k}" for k in adapter.secret_env if k in secrets]
            if name == "codex" and self.codex_auth_file is not None:
                ok = self.codex_auth_file.is_file()
                have.append(
                    f"ChatGPT sign-in {self.codex_auth_file}" + ("" if ok else " (missing)")
                )
            found[name] = have
        return found
