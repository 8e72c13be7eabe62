"""deploy/: the compose file is what `docker-compose config` accepts, the systemd units are
what `systemd-analyze verify` accepts without a warning, and both keep their promises
(AOF on a volume, hardening, draining on stop)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
ENV = {
    "TRIMO_REDIS_PASSWORD": "0123abcd",
    "TRIMO_GITHUB_APP_ID": "42",
    "TRIMO_WEBHOOK_SECRET": "webhook-secret",
}


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is required: run scripts/test (scripts/services.sh installs it)")
    return found


def compose_config(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRIMO_")}
    return subprocess.run(
        [tool("docker-compose"), "-p", "trimo", "-f", str(DEPLOY / "compose.yaml"), "config"],
        env={**clean, **env, "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )


def test_compose_file_is_valid_and_keeps_redis_on_an_aof_volume(tmp_path: Path) -> None:
    done = compose_config(tmp_path, ENV)
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    services = config["services"]
    assert set(services) == {"app", "worker", "redis"}

    redis = services["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--dir") + 1] == "/data"
    assert command[command.index("--requirepass") + 1] == ENV["TRIMO_REDIS_PASSWORD"]
    assert "redis-data:/data:rw" in redis["volumes"]
    assert "redis-data" in config["volumes"]

    for name, command_name in (("app", "serve"), ("worker", "worker")):
        service = services[name]
        assert service["command"] == [command_name]
        assert service["build"]["target"] == "app"
        env = service["environment"]
        assert env["TRIMO_REDIS_URL"] == f"redis://:{ENV['TRIMO_REDIS_PASSWORD']}@redis:6379/0"
        assert env["TRIMO_GITHUB_PRIVATE_KEY_PATH"] == "/run/secrets/github-app-key"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in service["security_opt"]
    assert services["app"]["ports"] == ["127.0.0.1:8000:8000/tcp"]

    stages = re.findall(r"^FROM \S+ AS (\S+)$", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert {s["build"]["target"] for s in services.values()} <= set(stages)


@pytest.mark.parametrize("missing", sorted(ENV))
def test_compose_names_a_missing_setting(tmp_path: Path, missing: str) -> None:
    done = compose_config(tmp_path, {k: v for k, v in ENV.items() if k != missing})
    assert done.returncode != 0
    assert missing in done.stderr


def unit_lines(name: str) -> list[tuple[str, str]]:
    pairs = []
    for line in (DEPLOY / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            pairs.append((key.strip(), value.strip()))
    return pairs


@pytest.mark.parametrize("unit", ["trimo-serve.service", "trimo-runner.service"])
def test_units_verify_without_a_warning(tmp_path: Path, unit: str) -> None:
    trimo = Path(sys.executable).parent / "trimo"
    assert trimo.exists(), "the venv's trimo entry point"
    text = (DEPLOY / unit).read_text().replace("/opt/trimo/.venv/bin/trimo", str(trimo))
    (tmp_path / unit).write_text(text)
    done = subprocess.run(
        [tool("systemd-analyze"), "verify", str(tmp_path / unit)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    # Unknown keys and bad values are only warnings: there must be none.
    assert unit not in done.stderr, done.stderr


def test_the_app_unit_is_hardened() -> None:
    settings = dict(unit_lines("trimo-serve.service"))
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "User": "trimo",
        "StateDirectory": "trimo",
    }.items():
        assert settings.get(key) == value, key


def test_the_runner_unit_drains_and_says_what_the_docker_socket_means() -> None:
    settings = dict(unit_lines("trimo-runner.service"))
    # SIGTERM to the daemon alone, with time for TRIMO_DRAIN_SECONDS (60) and the save.
    assert settings["KillSignal"] == "SIGTERM" and settings["KillMode"] == "mixed"
    assert int(settings["TimeoutStopSec"]) > 60 + 60
    assert settings["NoNewPrivileges"] == "yes"
    assert settings["CacheDirectory"] == "trimo"
    # Its loop-mounted disks must be visible to dockerd: no private mount namespace.
    for namespaced in ("ProtectSystem", "PrivateTmp", "ProtectHome", "PrivateDevices"):
        assert namespaced not in settings
    text = (DEPLOY / "trimo-runner.service").read_text()
    assert "Docker socket" in text and "root-equivalent" in text


@pytest.mark.parametrize("unit", ["trimo-serve.service", "trimo-runner.service"])
def test_units_allow_many_open_files(unit: str) -> None:
    """The preview proxy's and the dashboard's connections are open files: systemd's default
    soft limit of 1024 is too few."""
    assert int(dict(unit_lines(unit))["LimitNOFILE"]) >= 65536
