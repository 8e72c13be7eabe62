"""Runner settings: which API keys reach which agent, and the runner's policy."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from runner.settings import RunnerSettings


@pytest.mark.parametrize(
    ("agent", "expected"),
    [
        ("claude", {"ANTHROPIC_API_KEY"}),
        ("codex", {"OPENAI_API_KEY"}),
        ("aider", {"ANTHROPIC_API_KEY", "OPENAI_API_KEY"}),
        ("script", set()),
        ("unknown", set()),
    ],
)
def test_each_agent_gets_only_the_keys_it_reads(agent: str, expected: set[str]) -> None:
    settings = RunnerSettings(
        anthropic_api_key=SecretStr("sk-ant-1234"), openai_api_key=SecretStr("sk-openai-5678")
    )
    assert set(settings.secrets_for(agent)) == expected


def test_settings_come_from_trimo_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIMO_RUNNER_LABELS", "gpu,default")
    monkeypatch.setenv("TRIMO_RUNNER_ALLOWED_REPOS", "acme/*, other/one")
    monkeypatch.setenv("TRIMO_RUNNER_ALLOWED_NETWORKS", "none")
    settings = RunnerSettings()
    policy = settings.runner_policy()
    assert settings.runner_labels == "gpu,default"
    assert policy.allowed_repos == ["acme/*", "other/one"]
    assert policy.allowed_networks == ["none"]


def test_bad_settings_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIMO_RUNNER_CONCURRENCY", "0")
    with pytest.raises(ValueError, match="runner_concurrency"):
        RunnerSettings()


@pytest.mark.parametrize(
    ("value", "said"), [("0", "at least 1m"), ("512k", "at least 1m"), ("lots", "not a size")]
)
def test_a_run_log_budget_that_cannot_work_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str, said: str
) -> None:
    monkeypatch.setenv("TRIMO_RUN_LOG_MAX", value)
    with pytest.raises(ValueError, match=said):
        RunnerSettings()
    monkeypatch.setenv("TRIMO_RUN_LOG_MAX", "128m")
    assert RunnerSettings().run_log_max == "128m"


def test_an_empty_key_is_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """`TRIMO_ANTHROPIC_API_KEY=` (as runner.env.example has it) gives no agent a key, and
    `trimo doctor` does not count it."""
    monkeypatch.setenv("TRIMO_ANTHROPIC_API_KEY", "")
    settings = RunnerSettings()
    assert settings.secrets_for("claude") == {}
    assert settings.credentials()["claude"] == [] and settings.credentials()["aider"] == []


@pytest.mark.parametrize("url", ["gw.example.com", "http://localhost:4000", "ftp://gw"])
def test_an_anthropic_base_url_that_cannot_work_is_refused(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("TRIMO_ANTHROPIC_BASE_URL", url)
    with pytest.raises(ValueError, match="TRIMO_ANTHROPIC_BASE_URL"):
        RunnerSettings()


def test_the_operators_endpoints_reach_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIMO_ANTHROPIC_BASE_URL", " https://gw.example.com ")
    monkeypatch.setenv("TRIMO_CODEX_CONFIG_FILE", "/etc/trimo/codex.toml")
    config = RunnerSettings().engine_config("r", keep_ledger=False)
    assert config.anthropic_base_url == "https://gw.example.com"
    assert str(config.codex_config_file) == "/etc/trimo/codex.toml"
