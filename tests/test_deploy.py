"""deploy/: the compose file is what `docker-compose config` accepts, the systemd units are
what `systemd-analyze verify` accepts without a warning, and both keep their promises
(AOF on a volume, hardening, draining on stop)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from app.settings import AppSettings
from runner.basesettings import file_variable, secret_fields
from runner.settings import RunnerSettings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
SETTINGS = {
    "TRIMO_GITHUB_APP_ID": "42",
    "TRIMO_PUBLIC_URL": "https://trimo.example.com",
    "TRIMO_ADMINS": "alice,bob",
    "TRIMO_GITHUB_CLIENT_ID": "Iv1.0123456789abcdef",
    "TRIMO_POLICY_ALLOWED_NETWORKS": "none,allowlist",
    "TRIMO_LOG_RETENTION_DAYS": "3",
    "TRIMO_WORKERS": "3",
}
"""deploy/.env as an operator writes it: settings, no secret."""
SECRETS = {
    "redis-password": "0123abcd0123abcd",
    "github-app.pem": "-----BEGIN PRIVATE KEY-----\nnot-a-real-key\n-----END PRIVATE KEY-----",
    "webhook-secret": "webhook-secret-5e1f",
    "github-client-secret": "client-secret-77aa",
    "session-secret": "session-secret-c0de",
    "metrics-token": "metrics-token-b33f",
}
APP_SERVICES = ("app", "worker")


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is required: run scripts/test (scripts/services.sh installs it)")
    return found


def deployment(tmp_path: Path, settings: dict[str, str]) -> Path:
    """A copy of deploy/ with its .env and secrets/ filled in, as README.md says."""
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy)
    (copy / ".env").write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    (copy / "secrets").mkdir(mode=0o700)
    for name, value in SECRETS.items():
        (copy / "secrets" / name).write_text(value + "\n")
    return copy


def compose_config(tmp_path: Path, settings: dict[str, str] = SETTINGS) -> dict[str, Any]:
    copy = deployment(tmp_path, settings)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRIMO_")}
    done = subprocess.run(
        [tool("docker-compose"), "-p", "trimo", "-f", str(copy / "compose.yaml"), "config"],
        env={**clean, "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    for value in SECRETS.values():  # in no environment, command line or healthcheck
        assert value.splitlines()[1 if "\n" in value else 0] not in done.stdout
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


def test_compose_file_is_valid_and_keeps_redis_on_an_aof_volume(tmp_path: Path) -> None:
    config = compose_config(tmp_path)
    services = config["services"]
    assert set(services) == {"app", "worker", "redis"}

    redis = services["redis"]
    command = redis["command"]
    assert command[0] == "trimo-redis-start"
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--dir") + 1] == "/data"
    assert "--requirepass" not in command
    assert "redis-data:/data:rw" in redis["volumes"]
    assert "redis-data" in config["volumes"]

    for name, command_name in (("app", "serve"), ("worker", "worker")):
        service = services[name]
        assert service["command"] == [command_name]
        assert service["build"]["target"] == "app"
        assert service["environment"]["TRIMO_REDIS_URL"] == "redis://redis:6379/0"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in service["security_opt"]
    assert services["app"]["ports"] == ["127.0.0.1:8000:8000/tcp"]

    stages = re.findall(r"^FROM \S+ AS (\S+)$", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert {s["build"]["target"] for s in services.values()} <= set(stages)


def test_every_setting_in_dotenv_reaches_the_app_and_its_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What each App process would read: its environment from compose, its secrets from the
    files compose mounts at /run/secrets/ (here: the files they come from)."""
    config = compose_config(tmp_path)
    secrets_dir = tmp_path / "deploy" / "secrets"
    for name in APP_SERVICES:
        service = config["services"][name]
        env = service["environment"]
        for key, value in SETTINGS.items():
            assert env[key] == value, (name, key)
        mounted = {item["source"] for item in service["secrets"]}
        for key in list(os.environ):
            if key.startswith("TRIMO_"):
                monkeypatch.delenv(key)
        monkeypatch.chdir(tmp_path)
        for key, value in env.items():
            if value.startswith("/run/secrets/"):
                secret = value.removeprefix("/run/secrets/")
                assert secret in mounted, (name, key)
                value = str(secrets_dir / secret)
            monkeypatch.setenv(key, value)
        settings = AppSettings()
        assert settings.public_url == SETTINGS["TRIMO_PUBLIC_URL"]
        assert settings.admin_logins() == {"alice", "bob"}
        assert settings.github_client_id == SETTINGS["TRIMO_GITHUB_CLIENT_ID"]
        assert settings.log_retention_days == 3
        assert settings.host == "0.0.0.0" and settings.port == 8000
        assert settings.require_webhook_secret() == SECRETS["webhook-secret"]
        assert settings.private_key() == SECRETS["github-app.pem"]
        for field, secret in (
            ("github_client_secret", "github-client-secret"),
            ("session_secret", "session-secret"),
            ("metrics_token", "metrics-token"),
        ):
            assert getattr(settings, field).get_secret_value() == SECRETS[secret], field
        assert settings.redis_url == f"redis://:{SECRETS['redis-password']}@redis:6379/0"
    assert set(config["secrets"]) == set(SECRETS)


def test_compose_runs_for_a_year(tmp_path: Path) -> None:
    """Healthchecks, limits and rotated logs on every service; the worker count and a Redis
    port that leaves the host's own Redis alone, by default."""
    config = compose_config(tmp_path)
    for name, service in config["services"].items():
        assert service["healthcheck"]["test"], name
        assert service["logging"]["driver"] == "json-file", name
        assert service["logging"]["options"]["max-size"], name
        assert int(service["logging"]["options"]["max-file"]) >= 2, name
        assert service["mem_limit"] and service["cpus"] and service["pids_limit"], name
        assert service["restart"] == "unless-stopped", name
    assert config["services"]["worker"]["scale"] == 3
    assert config["services"]["app"]["ulimits"]["nofile"] == 65536
    ports = config["services"]["redis"]["ports"]
    assert ports == ["127.0.0.1:16379:6379/tcp"], ports
    defaults = compose_config(tmp_path / "defaults", {"TRIMO_GITHUB_APP_ID": "1"})
    assert defaults["services"]["worker"]["scale"] == 2


def test_redis_starts_with_its_password_from_a_file_and_nowhere_else(tmp_path: Path) -> None:
    password = "0a1b2c3d4e5f"
    (tmp_path / "password").write_text(password + "\n")
    socket_path = tmp_path / "redis.sock"
    env = {"PATH": os.environ["PATH"], "TRIMO_REDIS_PASSWORD_FILE": str(tmp_path / "password")}
    server = subprocess.Popen(
        [str(DEPLOY / "redis-start.sh"), "--port", "0", "--unixsocket", str(socket_path),
         "--dir", str(tmp_path), "--save", ""],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        client = redis.Redis(unix_socket_path=str(socket_path), password=password)
        deadline = time.monotonic() + 20
        while True:  # the socket's file is there a moment before Redis answers on it
            try:
                assert client.ping()
                break
            except redis.AuthenticationError:
                raise
            except redis.ConnectionError:
                assert server.poll() is None and time.monotonic() < deadline, "redis did not start"
                time.sleep(0.05)
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(unix_socket_path=str(socket_path)).set("x", 1)
        proc = Path(f"/proc/{server.pid}")
        assert password.encode() not in (proc / "cmdline").read_bytes()
        assert password.encode() not in (proc / "environ").read_bytes()
    finally:
        server.terminate()
        server.wait(timeout=20)
    for bad in ("", "two words", 'quote"d'):
        (tmp_path / "password").write_text(bad)
        done = subprocess.run(
            [str(DEPLOY / "redis-start.sh")], env=env, capture_output=True, text=True, timeout=20
        )
        assert done.returncode == 1 and "must hold one line" in done.stderr, done.stderr


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
    # SIGTERM to the daemon alone, with time for TRIMO_DRAIN_SECONDS and the save.
    assert settings["KillSignal"] == "SIGTERM" and settings["KillMode"] == "mixed"
    example = dict(
        line.split("=", 1)
        for line in (DEPLOY / "runner.env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert int(settings["TimeoutStopSec"]) >= float(example["TRIMO_DRAIN_SECONDS"]) + 120
    # and a raised drain is asked for when it begins (runner/sdnotify.py)
    assert settings["NotifyAccess"] == "main"
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


@pytest.mark.parametrize("unit", ["trimo-serve.service", "trimo-runner.service"])
def test_units_restart_always_and_take_secrets_as_credentials(unit: str) -> None:
    """Restart=always: a clean exit is no reason to stop. Each TRIMO_*_FILE points into the
    unit's credentials (%d) at a credential it loads, active or commented out alike, and
    names a secret setting; no secret is set in the unit itself."""
    pairs = unit_lines(unit)
    assert dict(pairs)["Restart"] == "always"
    text = (DEPLOY / unit).read_text()
    loaded = dict(re.findall(r"^#?LoadCredential=([^:\n]+):(/etc/trimo/\S+)$", text, re.M))
    files = dict(re.findall(r"^#?Environment=(TRIMO_\w+_FILE)=%d/(\S+)$", text, re.M))
    assert files and set(files.values()) == set(loaded), (files, loaded)
    for name, path in loaded.items():
        assert path == f"/etc/trimo/{name}"
    known = {file_variable(f) for f in secret_fields(AppSettings) + secret_fields(RunnerSettings)}
    assert set(files) <= known
    assert not re.search(r"^Environment=TRIMO_\w*(SECRET|PASSWORD|TOKEN|KEY)=", text, re.M)
    active = [value for key, value in pairs if key == "Environment"]
    assert any(value.startswith("TRIMO_REDIS_PASSWORD_FILE=") for value in active)
