"""Roles, bots, and merging a run command with the repository config under server policy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from app.conversation.commands import RunCommand, parse_comment
from app.conversation.policy import (
    ROLE_ORDER,
    Refusal,
    RunSettings,
    ServerPolicy,
    effective_run,
    is_bot,
    role_allows,
)
from app.conversation.repoconfig import RepoConfig, parse_repo_config
from app.ops.worker import server_policy
from app.settings import AppSettings, SettingsError
from runner.job import RepoRef, Resources, RunRequest


def test_role_order() -> None:
    assert ROLE_ORDER == ("read", "triage", "write", "maintain", "admin")


@pytest.mark.parametrize(
    ("role", "minimum", "allowed"),
    [
        ("admin", "write", True),
        ("maintain", "write", True),
        ("write", "write", True),
        ("triage", "write", False),
        ("read", "write", False),
        ("admin", "admin", True),
        ("maintain", "admin", False),
        ("write", "admin", False),
        ("admin", "maintain", True),
        ("maintain", "maintain", True),
        ("write", "maintain", False),
        ("triage", "triage", True),
        ("read", "triage", False),
        ("write", "triage", True),
        ("read", "read", True),
        ("triage", "read", True),
        (None, "write", False),
        (None, "read", False),
        ("", "write", False),
        ("none", "read", False),
        ("Admin", "write", False),
        ("owner", "write", False),
        ("security-manager", "triage", False),
        (" admin", "write", False),
        ("admin", "Admin", False),
        ("admin", "", False),
        ("admin", "superuser", False),
    ],
)
def test_role_allows(role: str | None, minimum: str, allowed: bool) -> None:
    assert role_allows(role, minimum) is allowed


@pytest.mark.parametrize(
    ("login", "user_type", "bot"),
    [
        ("octocat", "User", False),
        ("octocat", None, False),
        ("trimo-app[bot]", "Bot", True),
        ("dependabot[bot]", None, True),
        ("Renovate[BOT]", "User", True),
        ("some-app", "Bot", True),
        ("robot", "User", False),
        ("bot", "Organization", False),
    ],
)
def test_is_bot(login: str, user_type: str | None, bot: bool) -> None:
    assert is_bot(login, user_type) is bot


def test_is_bot_on_real_payloads(corpora: Path) -> None:
    human = json.loads((corpora / "webhooks/issue_comment.created.1.json").read_text())
    assert not is_bot(human["comment"]["user"]["login"], human["comment"]["user"]["type"])
    app_made = json.loads((corpora / "webhooks/issue_comment.created.6.json").read_text())
    author = app_made["issue"]["user"]
    assert is_bot(author["login"], author["type"])


DEFAULT_POLICY = ServerPolicy()


def run(prompt: str = "fix it", **options: Any) -> RunCommand:
    return RunCommand(prompt=prompt, **options)


@pytest.mark.parametrize(
    ("config_text", "command", "policy", "expected"),
    [
        (
            None,
            run(),
            DEFAULT_POLICY,
            RunSettings(
                agent="claude",
                image="trimo-agent:latest",
                label="default",
                timeout_minutes=30,
                network="allowlist",
                resources=Resources(memory="4g", cpus=2.0, pids=1024),
            ),
        ),
        (
            "agent: codex\nimage: registry.example.com/o/a:1\nrunner_label: gpu\n"
            "timeout_minutes: 60\n"
            "network: bridge\nresources: {memory: 8g, cpus: 4, pids: 2048}\nmax_cost_usd: 2",
            run(),
            DEFAULT_POLICY,
            RunSettings(
                agent="codex",
                image="registry.example.com/o/a:1",
                label="gpu",
                timeout_minutes=60,
                network="bridge",
                resources=Resources(memory="8g", cpus=4.0, pids=2048),
                max_cost_usd=2.0,
            ),
        ),
        (
            "agent: codex\nrunner_label: gpu\ntimeout_minutes: 60\nnetwork: bridge",
            run(agent="aider", label="big", timeout_minutes=5, network="none"),
            DEFAULT_POLICY,
            RunSettings(
                agent="aider",
                image="trimo-agent:latest",
                label="big",
                timeout_minutes=5,
                network="none",
                resources=Resources(),
            ),
        ),
        (
            "image: null",
            run(timeout_minutes=60),
            ServerPolicy(default_image="registry.local/agent:2", max_timeout_minutes=60),
            RunSettings(
                agent="claude",
                image="registry.local/agent:2",
                label="default",
                timeout_minutes=60,
                network="allowlist",
                resources=Resources(),
            ),
        ),
        (
            "image: registry.example.com/o/a:1",
            run(agent="codex"),
            ServerPolicy(
                allowed_images=["registry.example.com/o/a:1"], allowed_agents=["codex", "claude"]
            ),
            RunSettings(
                agent="codex",
                image="registry.example.com/o/a:1",
                label="default",
                timeout_minutes=30,
                network="allowlist",
                resources=Resources(),
            ),
        ),
        (
            "network: none",
            run(),
            ServerPolicy(allowed_images=["registry.example.com/o/a:1"], allowed_networks=["none"]),
            RunSettings(
                agent="claude",
                image="trimo-agent:latest",
                label="default",
                timeout_minutes=30,
                network="none",
                resources=Resources(),
            ),
        ),
        (
            "resources: {memory: 16g, cpus: 8, pids: 4096}",
            run(),
            DEFAULT_POLICY,
            RunSettings(
                agent="claude",
                image="trimo-agent:latest",
                label="default",
                timeout_minutes=30,
                network="allowlist",
                resources=Resources(memory="16g", cpus=8.0, pids=4096),
            ),
        ),
    ],
)
def test_effective_run(
    config_text: str | None, command: RunCommand, policy: ServerPolicy, expected: RunSettings
) -> None:
    assert effective_run(parse_repo_config(config_text), command, policy) == expected


MAX_60 = ServerPolicy(max_timeout_minutes=60)


@pytest.mark.parametrize(
    ("config_text", "command", "policy", "message"),
    [
        (
            None,
            run(timeout_minutes=120),
            MAX_60,
            "This repository may run for at most 60 minutes; you asked for 120.",
        ),
        (
            "timeout_minutes: 90",
            run(),
            MAX_60,
            "This repository may run for at most 60 minutes; `.github/trimo.yml` asks for 90.",
        ),
        (
            None,
            run(network="bridge"),
            ServerPolicy(allowed_networks=["none"]),
            "This server does not allow the network `bridge` (you asked for it); allowed: `none`.",
        ),
        (
            "network: bridge",
            run(),
            ServerPolicy(allowed_networks=["none"]),
            "This server does not allow the network `bridge` (`.github/trimo.yml` asks for it); "
            "allowed: `none`.",
        ),
        (
            None,
            run(),
            ServerPolicy(allowed_networks=[]),
            "This server does not allow the network `allowlist` (`.github/trimo.yml` asks for it); "
            "allowed: nothing.",
        ),
        (
            None,
            run(agent="aider"),
            ServerPolicy(allowed_agents=["claude", "codex"]),
            "This server does not offer the agent `aider` (you asked for it); "
            "available: `claude`, `codex`.",
        ),
        (
            "agent: aider",
            run(),
            ServerPolicy(allowed_agents=["claude"]),
            "This server does not offer the agent `aider` (`.github/trimo.yml` asks for it); "
            "available: `claude`.",
        ),
        (
            "image: evil.example/miner:latest",
            run(),
            ServerPolicy(allowed_images=["registry.example.com/o/a:1"]),
            "This server does not allow the image `evil.example/miner:latest` "
            "(`.github/trimo.yml` asks for it); allowed: `trimo-agent:latest`, "
            "`registry.example.com/o/a:1`.",
        ),
        (
            "resources: {memory: 32g}",
            run(),
            DEFAULT_POLICY,
            "A run may use at most 16g of memory; `.github/trimo.yml` asks for 32g.",
        ),
        (
            "resources: {memory: 20000m}",
            run(),
            DEFAULT_POLICY,
            "A run may use at most 16g of memory; `.github/trimo.yml` asks for 20000m.",
        ),
        (
            "resources: {cpus: 8.5}",
            run(),
            DEFAULT_POLICY,
            "A run may use at most 8 CPUs; `.github/trimo.yml` asks for 8.5.",
        ),
        (
            "resources: {pids: 5000}",
            run(),
            DEFAULT_POLICY,
            "A run may start at most 4096 processes; `.github/trimo.yml` asks for 5000.",
        ),
    ],
)
def test_refusals(
    config_text: str | None, command: RunCommand, policy: ServerPolicy, message: str
) -> None:
    result = effective_run(parse_repo_config(config_text), command, policy)
    assert result == Refusal(message=message, problems=(message,))


def test_the_repositorys_hosts_go_with_an_allowlist_run_only() -> None:
    config = parse_repo_config('allowed_hosts: [registry.npm.example.net, "*.pkgs.example.net"]')
    settings = effective_run(config, run(), DEFAULT_POLICY)
    assert isinstance(settings, RunSettings)
    assert (settings.network, settings.allowed_hosts) == (
        "allowlist",
        ["registry.npm.example.net", "*.pkgs.example.net"],
    )
    closed = effective_run(config, run(network="none"), DEFAULT_POLICY)
    assert isinstance(closed, RunSettings)
    assert closed.allowed_hosts == []


NPM_ONLY = ServerPolicy(allowed_hosts=["*.npm.example.net", "pkgs.example.net"])


@pytest.mark.parametrize(
    ("hosts", "allowed"),
    [
        ("[registry.npm.example.net]", True),
        ('["*.npm.example.net", "*.x.npm.example.net", pkgs.example.net]', True),
        ("[npm.example.net]", False),
        ("[files.pkgs.example.net]", False),
        ('["*.pkgs.example.net"]', False),
    ],
)
def test_the_servers_host_cap(hosts: str, allowed: bool) -> None:
    result = effective_run(parse_repo_config(f"allowed_hosts: {hosts}"), run(), NPM_ONLY)
    assert isinstance(result, RunSettings) is allowed


def test_a_host_outside_the_servers_cap_is_refused_saying_which_and_how() -> None:
    config = parse_repo_config("allowed_hosts: [registry.npm.example.net, example.org, evil.test]")
    result = effective_run(config, run(), NPM_ONLY)
    assert result == Refusal(
        message=(
            "This server does not allow the hosts `example.org`, `evil.test` "
            "(`.github/trimo.yml` asks for them in `allowed_hosts`); allowed: `*.npm.example.net`, "
            "`pkgs.example.net`. Remove them from `allowed_hosts`, or ask whoever runs this Trimo "
            "server to add them to `TRIMO_POLICY_ALLOWED_HOSTS`."
        ),
        problems=(
            "This server does not allow the hosts `example.org`, `evil.test` "
            "(`.github/trimo.yml` asks for them in `allowed_hosts`); allowed: `*.npm.example.net`, "
            "`pkgs.example.net`. Remove them from `allowed_hosts`, or ask whoever runs this Trimo "
            "server to add them to `TRIMO_POLICY_ALLOWED_HOSTS`.",
        ),
    )
    # Without an allowlist network the hosts are not used, so nothing is refused.
    assert isinstance(effective_run(config, run(network="none"), NPM_ONLY), RunSettings)


def test_the_servers_caps_come_from_its_settings() -> None:
    settings = AppSettings(
        _env_file=None,
        policy_allowed_hosts=" pkgs.example.net, *.npm.example.net ,",
        policy_allowed_networks="allowlist,none",
    )
    policy = server_policy(settings)
    assert policy.allowed_hosts == ["*.npm.example.net", "pkgs.example.net"]
    assert policy.allowed_networks == ["none", "allowlist"]
    assert server_policy(AppSettings(_env_file=None)).allowed_networks == [
        "none",
        "allowlist",
        "bridge",
    ]
    broken = AppSettings(_env_file=None, policy_allowed_hosts="pkgs.example.net,10.0.0.1")
    with pytest.raises(
        SettingsError, match=r"TRIMO_POLICY_ALLOWED_HOSTS: '10\.0\.0\.1' is an address"
    ):
        server_policy(broken)


def test_all_refusals_reported_together() -> None:
    config = parse_repo_config("network: bridge\nresources: {pids: 9999}")
    policy = ServerPolicy(max_timeout_minutes=10, allowed_networks=["none"])
    result = effective_run(config, run(timeout_minutes=20), policy)
    assert isinstance(result, Refusal)
    assert len(result.problems) == 3
    assert result.message == " ".join(result.problems)
    assert "you asked for 20" in result.message


def test_command_from_a_comment_becomes_a_run_request() -> None:
    command = parse_comment(
        "/trimo run --agent codex --timeout 45 --network bridge\nFix the bug.", "trimo-app"
    )
    assert isinstance(command, RunCommand)
    settings = effective_run(RepoConfig(), command, DEFAULT_POLICY)
    assert isinstance(settings, RunSettings)
    assert settings.timeout_s == 45 * 60
    request = RunRequest(
        run_id="o.r.1.1",
        pipeline="o.r.1",
        repo=RepoRef(full_name="o/r", clone_url="/tmp/r"),
        branch="trimo/1-fix",
        base_branch="main",
        prompt=command.prompt,
        agent=settings.agent,
        image=settings.image,
        timeout_s=settings.timeout_s,
        network=settings.network,
        resources=settings.resources,
        runner_label=settings.label,
    )
    assert request.agent == "codex"
    assert request.network == "bridge"
    assert request.timeout_s == 2700


@pytest.mark.parametrize(
    "fields",
    [
        {"max_timeout_minutes": 0},
        {"max_timeout_minutes": 1441},
        {"allowed_networks": ["host"]},
        {"max_memory": "lots"},
        {"max_cpus": 0},
        {"max_pids": 1},
        {"unknown": 1},
    ],
)
def test_policy_validation(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ServerPolicy.model_validate(fields)


def test_setup_goes_with_the_run_within_the_servers_caps() -> None:
    text = "setup: {run: npm ci, paths: [node_modules], allowed_hosts: [registry.npm.example.net]}"
    settings = effective_run(parse_repo_config(text), run(network="none"), NPM_ONLY)
    assert isinstance(settings, RunSettings) and settings.setup is not None
    assert settings.setup.allowed_hosts == ["registry.npm.example.net"]  # its own, any network
    outside = effective_run(
        parse_repo_config(text.replace("registry.npm", "evil")), run(), NPM_ONLY
    )
    assert isinstance(outside, Refusal)
    assert "`evil.example.net` (`.github/trimo.yml` asks for it in `setup.allowed_hosts`)" in (
        outside.message
    )
    no_allowlist = ServerPolicy(allowed_networks=["none"])
    refused = effective_run(parse_repo_config(text), run(network="none"), no_allowlist)
    assert isinstance(refused, Refusal) and "`setup.allowed_hosts` needs" in refused.message
    long = "setup: {run: x, paths: [a], timeout_minutes: 100}"
    short = ServerPolicy(max_timeout_minutes=60)
    too_long = effective_run(parse_repo_config(long), run(timeout_minutes=5), short)
    assert isinstance(too_long, Refusal) and "A setup may run for at most 60" in too_long.message
