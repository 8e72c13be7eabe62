"""`.github/trimo.yml`: defaults, valid settings, and messages for broken files."""

from __future__ import annotations

from typing import Any

import pytest

from app.conversation.repoconfig import (
    ConfigError,
    RepoConfig,
    ResourcesConfig,
    memory_bytes,
    parse_repo_config,
)
from runner.setup.spec import SetupSpec

DEFAULTS = RepoConfig()


def test_defaults() -> None:
    assert DEFAULTS.agent == "claude"
    assert DEFAULTS.image is None
    assert DEFAULTS.runner_label == "default"
    assert DEFAULTS.timeout_minutes == 30
    assert DEFAULTS.network == "allowlist"
    assert DEFAULTS.allowed_hosts == []
    assert DEFAULTS.resources == ResourcesConfig(memory="4g", cpus=2.0, pids=1024)
    assert DEFAULTS.trigger_label == "trimo"
    assert DEFAULTS.min_permission == "write"
    assert DEFAULTS.branch_prefix == "trimo/"


@pytest.mark.parametrize(
    "text",
    [None, "", "   ", "\n\n", "# only a comment\n", "---\n", "---\n...\n", "~\n", "null"],
)
def test_empty_gives_defaults(text: str | None) -> None:
    assert parse_repo_config(text) == DEFAULTS


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("agent: codex", {"agent": "codex"}),
        (
            "image: registry.example.com/org/agent:1.2",
            {"image": "registry.example.com/org/agent:1.2"},
        ),
        ("image: reg.local:5000/a/b@sha256:abc123", {"image": "reg.local:5000/a/b@sha256:abc123"}),
        ("image: null", {"image": None}),
        ("runner_label: gpu-box", {"runner_label": "gpu-box"}),
        ("timeout_minutes: 90", {"timeout_minutes": 90}),
        ("timeout_minutes: 1", {"timeout_minutes": 1}),
        ("timeout_minutes: 1440", {"timeout_minutes": 1440}),
        ("network: bridge", {"network": "bridge"}),
        ("network: none", {"network": "none"}),
        ("network: allowlist", {"network": "allowlist"}),
        (
            "allowed_hosts: "
            '[Registry.npm.example.net., "*.pkgs.example.net", registry.npm.example.net]',
            {"allowed_hosts": ["registry.npm.example.net", "*.pkgs.example.net"]},
        ),
        (
            'allowed_hosts:\n  - "*.crates.example.com"\n  - static.rust.example.com\n',
            {"allowed_hosts": ["*.crates.example.com", "static.rust.example.com"]},
        ),
        ("allowed_hosts: []", {"allowed_hosts": []}),
        (
            "resources:\n  memory: 8G\n  cpus: 4\n  pids: 2048",
            {"resources": ResourcesConfig(memory="8g", cpus=4.0, pids=2048)},
        ),
        ("resources: {cpus: 0.5}", {"resources": ResourcesConfig(cpus=0.5)}),
        ("resources: {memory: 512m}", {"resources": ResourcesConfig(memory="512m")}),
        ("resources: {memory: 64m}", {"resources": ResourcesConfig(memory="64m")}),
        ("resources: {}", {"resources": ResourcesConfig()}),
        ("trigger_label: 'agent: go'", {"trigger_label": "agent: go"}),
        ("trigger_label: 🤖 robot", {"trigger_label": "🤖 robot"}),
        ("min_permission: triage", {"min_permission": "triage"}),
        ("min_permission: maintain", {"min_permission": "maintain"}),
        ("min_permission: admin", {"min_permission": "admin"}),
        ("branch_prefix: bots/trimo-", {"branch_prefix": "bots/trimo-"}),
        ("branch_prefix: ai/", {"branch_prefix": "ai/"}),
        ("max_cost_usd: 2.5", {"max_cost_usd": 2.5}),
        ("max_cost_usd: 3", {"max_cost_usd": 3.0}),
        (
            "# Trimo settings\r\nagent: aider\r\ntimeout_minutes: 45\r\n",
            {"agent": "aider", "timeout_minutes": 45},
        ),
        (
            "---\nagent: codex\nnetwork: bridge\nmin_permission: admin\n",
            {"agent": "codex", "network": "bridge", "min_permission": "admin"},
        ),
        (
            "agent: claude   # the default\ntimeout_minutes: 60\n",
            {"agent": "claude", "timeout_minutes": 60},
        ),
    ],
)
def test_valid(text: str, expected: dict[str, Any]) -> None:
    assert parse_repo_config(text) == DEFAULTS.model_copy(update=expected)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        # YAML syntax, with line and column
        ("agent: [codex", ["not valid YAML", "line 1, column 14"]),
        ("agent: codex\n  timeout_minutes: 5\n", ["not valid YAML", "line 2, column 18"]),
        ("agent: codex\n\ttimeout_minutes: 5\n", ["not valid YAML", "line 2"]),
        ("agent: 'open", ["not valid YAML", "line 1"]),
        ("agent: !!python/object:os.system x", ["not valid YAML", "line 1, column 8"]),
        ("a: *nothing", ["not valid YAML", "line 1"]),
        # not a mapping
        ("- agent: codex", ["should be a mapping", "a list"]),
        ("just words", ["should be a mapping", "only text"]),
        ("42", ["should be a mapping", "`42`"]),
        # unknown keys, with the known ones
        (
            "timeout: 30",
            [
                "Unknown setting `timeout`",
                "Did you mean `timeout_minutes`?",
                "`agent`, `image`, `runner_label`, `timeout_minutes`, `network`, `allowed_hosts`, "
                "`resources`, "
                "`trigger_label`, `discover_label`, `ci_failure`, `ci_failure_attempts`, "
                "`min_permission`, `branch_prefix`",
            ],
        ),
        ("Agent: codex", ["Unknown setting `Agent`", "Did you mean `agent`?"]),
        ("colour: blue", ["Unknown setting `colour`", "Known settings:"]),
        (
            "resources:\n  gpus: 1",
            ["Unknown setting `gpus` under `resources`", "`memory`, `cpus`, `pids`"],
        ),
        ("1: x", ["Unknown setting `1`"]),
        # wrong types and values, with the field path
        ("timeout_minutes: soon", ["`timeout_minutes` should be a whole number", "`soon`"]),
        ("timeout_minutes: '30'", ["`timeout_minutes` should be a whole number"]),
        ("timeout_minutes: 2.5", ["`timeout_minutes` should be a whole number", "`2.5`"]),
        ("timeout_minutes: true", ["`timeout_minutes` should be a whole number"]),
        ("timeout_minutes: 0", ["`timeout_minutes` should be greater than or equal to 1"]),
        ("timeout_minutes: 1441", ["`timeout_minutes` should be less than or equal to 1440"]),
        ("max_cost_usd: lots", ["`max_cost_usd` should be a number", "`lots`"]),
        ("max_cost_usd: '2'", ["`max_cost_usd` should be a number"]),
        ("max_cost_usd: 0", ["`max_cost_usd` should be greater than 0"]),
        ("max_cost_usd: 20000", ["`max_cost_usd` should be less than or equal to 10000"]),
        ("network: host", ["`network` should be 'none', 'allowlist' or 'bridge'", "`host`"]),
        ("network: no", ["`network` should be 'none', 'allowlist' or 'bridge'", "`False`"]),
        ("agent: 9lives", ["`agent` should be an agent name"]),
        ("agent: Claude", ["`agent` should be an agent name"]),
        ("agent: ../../bin/sh", ["`agent` should be an agent name"]),
        ("agent: [a, b]", ["`agent` should be text"]),
        ("agent: null", ["`agent` should be text"]),
        ("image: 'ubuntu; rm -rf /'", ["`image` should be a Docker image reference"]),
        ("image: -rf", ["`image` should be a Docker image reference"]),
        ("runner_label: ../etc", ["`runner_label` should be up to 64"]),
        ("resources: 4g", ["`resources` should be a mapping of settings"]),
        ("resources: {memory: 4x}", ["`resources.memory` should be a number followed by k, m"]),
        ("resources: {memory: 4}", ["`resources.memory` should be text"]),
        ("resources: {memory: 6m}", ["`resources.memory` should be at least 64m"]),
        ("resources: {cpus: 0}", ["`resources.cpus` should be greater than 0"]),
        ("resources: {cpus: many}", ["`resources.cpus` should be a number"]),
        ("resources: {pids: 8}", ["`resources.pids` should be greater than or equal to 16"]),
        ("trigger_label: ''", ["`trigger_label` should not be empty", "(found nothing)"]),
        ("trigger_label: '   '", ["`trigger_label` should be the name of a label"]),
        ('trigger_label: "a\\nb"', ["`trigger_label` should be the name of a label"]),
        ("min_permission: read", ["`min_permission` cannot be read", "triage, write"]),
        ("min_permission: owner", ["`min_permission` should be 'triage', 'write', 'maintain'"]),
        ("branch_prefix: ../", ["`branch_prefix` should be"]),
        ("branch_prefix: refs/heads/", ["`branch_prefix` should be"]),
        ("branch_prefix: -x/", ["`branch_prefix` should be"]),
        ("branch_prefix: a//", ["`branch_prefix` should be"]),
        ("branch_prefix: 'a b/'", ["`branch_prefix` should be"]),
        ("branch_prefix: ''", ["`branch_prefix` should be"]),
        (
            "allowed_host: [pkgs.example.net]",
            ["Unknown setting `allowed_host`", "`allowed_hosts`?"],
        ),
        (
            "allowed_hosts: pkgs.example.net",
            [
                "`allowed_hosts` should be a list, like `[registry.example.com",
                "`pkgs.example.net`",
            ],
        ),
        (
            "allowed_hosts: [pkgs.example.net, https://x.org/]",
            ["a problem", "`allowed_hosts.1` is not a host name", "(found `https://x.org/`)"],
        ),
        (
            "allowed_hosts: [169.254.169.254]",
            ["`allowed_hosts.0` is an address: allow host names, not addresses"],
        ),
        ("allowed_hosts: ['*.com']", ["`allowed_hosts.0` is too wide", "at least two labels"]),
        ("allowed_hosts: [localhost]", ["`allowed_hosts.0` is not a full host name"]),
        ("allowed_hosts: ['']", ["`allowed_hosts.0` should be a host name like"]),
        ("allowed_hosts: [3]", ["`allowed_hosts.0` should be text"]),
        (
            "allowed_hosts:\n  - *.npm.example.net\n",
            ["not valid YAML", "line 2", "Quote a host pattern that starts with `*`"],
        ),
        (
            "allowed_hosts: [" + ", ".join(f"h{i}.example.org" for i in range(101)) + "]",
            ["`allowed_hosts` should have at most 100 entries"],
        ),
        ("preview: {setup: npm ci}", ["`preview.command` is missing: it is required here."]),
        ("preview: npm run dev", ["`preview` should be a mapping of settings"]),
        ("preview: {command: x, port: 0}", ["`preview.port` should be greater than or equal"]),
        ("preview: {command: x, port: '3000'}", ["`preview.port` should be a whole number"]),
        ("preview: {command: x, ready_path: health}", ["`preview.ready_path` should be a path"]),
        ("preview: {command: x, idle_minutes: 0}", ["`preview.idle_minutes` should be greater"]),
        (
            "preview: {command: x, ready-path: /}",
            [
                "Unknown setting `ready-path` under `preview`. Did you mean `ready_path`?",
                "Known settings under `preview`: `command`, `setup`",
            ],
        ),
    ],
)
def test_errors(text: str, says: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_repo_config(text)
    message = caught.value.message
    assert message.startswith("`.github/trimo.yml` ")
    for part in says:
        assert part in message
    assert str(caught.value) == message


def test_every_problem_listed() -> None:
    text = "timeout: 3\nnetwork: host\nresources:\n  memory: lots\nmin_permission: read\n"
    with pytest.raises(ConfigError) as caught:
        parse_repo_config(text)
    error = caught.value
    assert len(error.problems) == 4
    assert error.message.startswith("`.github/trimo.yml` has 4 problems:\n\n- ")
    for problem in error.problems:
        assert f"- {problem}" in error.message


def test_known_settings_listed_once() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_repo_config("timeout: 3\ncolour: x\nresources: {gpu: 1, disk: 2}\n")
    message = caught.value.message
    assert len(caught.value.problems) == 4
    assert message.count("Known settings: `agent`") == 1
    assert message.count("Known settings under `resources`: `memory`, `cpus`, `pids`.") == 1
    assert message.endswith("`memory`, `cpus`, `pids`.")


def test_hostile_values_are_quoted() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_repo_config("agent: '@everyone `rm` [x](http://e.example)'")
    assert "``@everyone `rm` [x](http://e.example)``" in caught.value.message


def test_recursive_alias_does_not_hang() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_repo_config("agent: &a [*a]\n")
    assert "`agent` should be text" in caught.value.message
    assert len(caught.value.message) < 300


def test_billion_laughs_stays_small() -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    with pytest.raises(ConfigError) as caught:
        parse_repo_config("\n".join(lines) + "\n")
    assert len(caught.value.problems) == 9
    assert len(caught.value.message) < 12_000


def test_huge_file_refused() -> None:
    text = "# padding\n" * 10_000 + "agent: codex\n"
    with pytest.raises(ConfigError, match="larger than 64 KiB"):
        parse_repo_config(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("64m", 64 * 1024**2),
        ("512M", 512 * 1024**2),
        ("4g", 4 * 1024**3),
        (" 16G ", 16 * 1024**3),
        ("1024k", 1024**2),
    ],
)
def test_memory_bytes(text: str, size: int) -> None:
    assert memory_bytes(text) == size


@pytest.mark.parametrize("text", ["", "4", "4gb", "0g", "-1g", "1.5g", "4 g", "g", "4t", "١g"])
def test_memory_bytes_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        memory_bytes(text)


def test_preview_section() -> None:
    text = (
        "preview:\n  setup: npm ci\n  command: npm run dev -- --host 0.0.0.0 --port $PORT\n"
        "  port: 3000\n  ready_path: /\n  idle_minutes: 30\n"
    )
    preview = parse_repo_config(text).preview
    assert preview is not None
    assert preview.setup == "npm ci" and preview.command.endswith("--port $PORT")
    assert (preview.port, preview.ready_path, preview.idle_minutes) == (3000, "/", 30)
    assert preview.image is None and preview.auto is False
    assert parse_repo_config("agent: claude").preview is None
    auto = parse_repo_config("preview: {command: make serve, auto: true}").preview
    assert auto is not None and auto.auto and auto.port == 3000


def test_config_is_frozen() -> None:
    config = parse_repo_config("agent: codex")
    with pytest.raises(ValueError):
        config.agent = "aider"  # type: ignore[misc]


SETUP = """\
setup:
  run: npm ci
  cache_key: [package-lock.json]
  paths: [node_modules, ~/.npm]
  allowed_hosts: [Registry.Example.com., registry.example.com]
  timeout_minutes: 20
"""


def test_setup_section() -> None:
    setup = parse_repo_config(SETUP).setup
    assert setup is not None
    assert setup.spec() == SetupSpec(
        run="npm ci",
        cache_key=["package-lock.json"],
        paths=["node_modules", "~/.npm"],
        allowed_hosts=["registry.example.com"],
        timeout_s=20 * 60,
    )
    assert parse_repo_config("agent: claude").setup is None
    least = parse_repo_config("setup: {run: make deps, paths: [vendor]}").setup
    assert least is not None and least.spec().timeout_s == 15 * 60 and least.cache_key == []


@pytest.mark.parametrize(
    ("setup", "problem"),
    [
        ("{run: x, paths: [/etc]}", "`setup.paths.0` should be relative to the workspace"),
        ("{run: x, paths: [../up]}", "`setup.paths.0` should not hold `.`, `..`"),
        ("{run: x, paths: [a/./b]}", "`setup.paths.0` should not hold `.`, `..`"),
        ("{run: x, paths: [dist/]}", "`setup.paths.0` should not hold `.`, `..`"),
        ("{run: x, paths: [.git/hooks]}", "`setup.paths.0` should not be in `.git`"),
        ("{run: x, paths: ['~']}", "`setup.paths.0` should start with `~/` only"),
        ("{run: x, paths: ['~/']}", "`setup.paths.0` should not hold `.`, `..`"),
        ("{run: x, paths: [a, a/b]}", "`setup.paths` lists `a` and `a/b`, which overlap"),
        ("{run: x, paths: []}", "`setup.paths` list should have at least 1 item"),
        ("{run: x}", "`setup.paths` is missing"),
        ("{paths: [a]}", "`setup.run` is missing"),
        ("{run: '', paths: [a]}", "`setup.run` should not be empty"),
        ("{run: x, paths: [a], cache_key: ['~/.npmrc']}", "`setup.cache_key.0` should be a file"),
        ("{run: x, paths: [a], cache_key: [../x]}", "`setup.cache_key.0` should not hold"),
        ("{run: x, paths: [a], timeout_minutes: 121}", "`setup.timeout_minutes` should be less"),
        ("{run: x, paths: [a], allowed_hosts: [http://x]}", "`setup.allowed_hosts.0`"),
        ("{run: x, paths: [a], caches: [a]}", "Unknown setting `caches` under `setup`"),
        ("npm ci", "`setup` should be a mapping of settings"),
    ],
)
def test_setup_section_refuses(setup: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_repo_config(f"setup: {setup}")
    assert problem in caught.value.message
