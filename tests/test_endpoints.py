"""The operator's endpoints for agents' APIs: base URLs and Codex's config.toml, read into
the hosts that join a run's allowlist and the values scrubbed from its output."""

from __future__ import annotations

import pytest

from runner.agents.endpoints import Endpoint, endpoint_of, read_codex_config
from runner.errors import TrimoError


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://llm-gateway.example.com", Endpoint("llm-gateway.example.com", 443)),
        ("http://llm-gateway.example.com/anthropic", Endpoint("llm-gateway.example.com", 80)),
        ("https://GW.example.com.:8443/v1", Endpoint("gw.example.com", 8443)),
        ("http://10.1.2.3:4000", Endpoint("10.1.2.3", 4000)),
        ("http://[fd00::5]:4000", Endpoint("fd00::5", 4000)),
        (" https://user:pw@gw.example.com ", Endpoint("gw.example.com", 443)),
    ],
)
def test_a_base_urls_host_and_port(url: str, expected: Endpoint) -> None:
    assert endpoint_of(url, "X") == expected


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("gw.example.com", "not an http"),
        ("ftp://gw.example.com", "not an http"),
        ("https://", "not an http"),
        ("https://gw.example.com:99999", "not an http"),
        ("http://localhost:4000", "loopback"),
        ("http://127.0.0.1:4000", "loopback"),
        ("http://[::1]:4000", "loopback"),
    ],
)
def test_a_base_url_that_cannot_be_reached_is_refused_with_a_reason(url: str, why: str) -> None:
    with pytest.raises(TrimoError, match=why) as raised:
        endpoint_of(url, "TRIMO_ANTHROPIC_BASE_URL")
    assert "TRIMO_ANTHROPIC_BASE_URL" in raised.value.message and raised.value.hint


AZURE = """\
model = "gpt-5-codex"
model_provider = "azure"

[model_providers.azure]
name = "Azure"
base_url = "https://acme.openai.azure.example.com/openai"
env_key = "AZURE_OPENAI_API_KEY"
query_params = { api-version = "2025-04-01-preview" }

[model_providers.litellm]
base_url = "http://10.0.0.7:4000/v1"
env_key = "OPENAI_API_KEY"
experimental_bearer_token = "bearer-0123456789"
http_headers = { "X-Team" = "platform-team-7" }

[model_providers.twin]
base_url = "http://10.0.0.7:4000/v2"
"""


def test_a_codex_config_gives_its_providers_endpoints_and_secrets() -> None:
    config = read_codex_config(AZURE, "config.toml")
    assert config.text == AZURE
    assert config.endpoints == [
        Endpoint("acme.openai.azure.example.com", 443),
        Endpoint("10.0.0.7", 4000),
    ]
    assert config.secrets == ["bearer-0123456789", "platform-team-7"]
    assert config.key_env == {"azure": "AZURE_OPENAI_API_KEY", "litellm": "OPENAI_API_KEY"}


def test_a_codex_config_without_providers_calls_openai() -> None:
    config = read_codex_config('model = "gpt-5-codex"\n', "config.toml")
    assert config.endpoints == [] and config.secrets == []


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("model = ", "not valid TOML"),
        ("model_providers = 3", "model_providers is not a table"),
        ("[model_providers]\nx = 1", "model_providers.x is not a table"),
        ("[model_providers.x]\nbase_url = 1", "base_url is not a string"),
        ("[model_providers.x]\nbase_url = 'gw.example.com'", "not an http"),
        ("[model_providers.x]\nbase_url = 'http://localhost:11434/v1'", "loopback"),
    ],
)
def test_a_codex_config_that_cannot_be_used_is_refused(text: str, why: str) -> None:
    with pytest.raises(TrimoError, match=why) as raised:
        read_codex_config(text, "/etc/trimo/codex.toml")
    assert "/etc/trimo/codex.toml" in raised.value.message
