"""`trimo runner install` under a temporary root: the files deploy/README.md names, private
where they hold a secret, kept when they are there, and checked as the unit will run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runner.install import Layout, unit_environment
from tests.redis_servers import RedisProcess
from tests.test_doctor import server_answers

TRIMO = [sys.executable, "-m", "app.ops.cli"]


def install(root: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIMO_")}
    return subprocess.run(
        [*TRIMO, "runner", "install", "--root", str(root), *args],
        env={**env, "COLUMNS": "300", "TERM": "dumb"},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
    )


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(root)): (mode(p), p.read_bytes() if p.is_file() else b"")
        for p in sorted(root.rglob("*"))
    }


def test_install_writes_the_runners_files_privately_and_again_changes_nothing(
    tmp_path: Path,
) -> None:
    layout = Layout(tmp_path)
    password = tmp_path / "pw"
    password.write_text("s3cret-pw\n")
    args = (
        "--redis-url", "redis://redis.example.internal:16379/0", "--runner-id", "build-07",
        "--labels", "default,gpu", "--concurrency", "3", "--redis-password-file", str(password),
        "--no-check",
    )  # fmt: skip
    first = install(tmp_path, *args)
    assert first.returncode == 0, first.stdout + first.stderr
    env = layout.env_file.read_text()
    for line in (
        "TRIMO_REDIS_URL=redis://redis.example.internal:16379/0",
        "TRIMO_RUNNER_ID=build-07",
        "TRIMO_RUNNER_LABELS=default,gpu",
        "TRIMO_RUNNER_CONCURRENCY=3",
        "TRIMO_DRAIN_SECONDS=60",
    ):
        assert line in env.splitlines()
    assert (layout.etc / "redis-password").read_text() == "s3cret-pw\n"
    assert mode(layout.etc) == 0o700
    assert mode(layout.env_file) == mode(layout.etc / "redis-password") == 0o600
    assert all(mode(d) == 0o700 for d in layout.directories)
    unit = layout.unit.read_text()
    assert f"ExecStart={Path(sys.executable).parent / 'trimo'} runner\n" in unit
    assert "EnvironmentFile=/etc/trimo/runner.env" in unit and not layout.dropin.exists()

    before = snapshot(tmp_path)
    again = install(tmp_path, *args)
    assert again.returncode == 0, again.stdout + again.stderr
    assert snapshot(tmp_path) == before
    assert "runner.env: unchanged" in again.stdout and "wrote" not in again.stdout


def test_an_existing_env_file_and_password_are_kept_without_force(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.etc.mkdir(parents=True)
    mine = "TRIMO_REDIS_URL=redis://old.example.internal/0\nTRIMO_ANTHROPIC_API_KEY=sk-mine\n"
    layout.env_file.write_text(mine)
    layout.env_file.chmod(0o644)  # as an older doc installed it
    (layout.etc / "redis-password").write_text("old-pw")
    new_pw = tmp_path / "new-pw"
    new_pw.write_text("new-pw")
    args = ("--redis-url", "redis://new.example.internal/0", "--redis-password-file", str(new_pw))

    kept = install(tmp_path, *args, "--no-check")
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert layout.env_file.read_text() == mine and mode(layout.env_file) == 0o600
    assert (layout.etc / "redis-password").read_text() == "old-pw"
    assert "runner.env: kept (differs; --force replaces it), mode 0644 made 0600" in kept.stdout

    kept_whole = install(tmp_path, "--no-check")  # no setting given: runner.env stays
    assert kept_whole.returncode == 0 and layout.env_file.read_text() == mine

    forced = install(tmp_path, *args, "--force", "--no-check")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert "TRIMO_REDIS_URL=redis://new.example.internal/0" in layout.env_file.read_text()
    assert "sk-mine" not in layout.env_file.read_text()
    assert (layout.etc / "redis-password").read_text() == "new-pw"


def test_a_value_cannot_add_a_setting_to_the_env_file(tmp_path: Path) -> None:
    """Attack: a label with a line break would write a second line into runner.env, here one
    that lifts the runner's repository limit."""
    injected = install(
        tmp_path, "--redis-url", "redis://r.example.internal/0", "--labels",
        "default\nTRIMO_RUNNER_ALLOWED_REPOS=*", "--no-check",
    )  # fmt: skip
    assert injected.returncode == 1 and "Traceback" not in injected.stderr
    assert "--labels 'default\\nTRIMO_RUNNER_ALLOWED_REPOS=*': not a plain value" in (
        injected.stderr.replace("\n  ", " ")
    )
    assert not Layout(tmp_path).env_file.exists()


def test_a_link_in_place_of_the_env_file_is_not_followed(tmp_path: Path) -> None:
    """Attack: runner.env planted as a link to a file others read; writing through it would
    put the runner's settings (and any secret in them) there."""
    layout = Layout(tmp_path)
    layout.etc.mkdir(parents=True)
    public = tmp_path / "public.txt"
    public.write_text("public\n")
    public.chmod(0o644)
    layout.env_file.symlink_to(public)
    args = ("--redis-url", "redis://:pw-in-url@r.example.internal/0", "--no-check")
    refused = install(tmp_path, *args)
    assert refused.returncode == 1 and "runner.env is not a regular file" in refused.stderr
    forced = install(tmp_path, *args, "--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert public.read_text() == "public\n"
    assert not layout.env_file.is_symlink() and mode(layout.env_file) == 0o600
    assert "pw-in-url" in layout.env_file.read_text()


def test_agent_keys_in_etc_trimo_become_the_units_credentials(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    assert (
        install(tmp_path, "--redis-url", "redis://r.example.internal/0", "--no-check").returncode
        == 0
    )
    key = layout.etc / "anthropic-api-key"
    key.write_text("sk-ant-test")
    key.chmod(0o640)
    wired = install(tmp_path, "--no-check")
    assert wired.returncode == 0, wired.stdout + wired.stderr
    dropin = layout.dropin.read_text()
    assert "LoadCredential=anthropic-api-key:/etc/trimo/anthropic-api-key" in dropin
    assert "Environment=TRIMO_ANTHROPIC_API_KEY_FILE=%d/anthropic-api-key" in dropin
    assert mode(key) == 0o600
    env = unit_environment(layout, layout.unit.read_text(), dropin)
    assert env["TRIMO_ANTHROPIC_API_KEY_FILE"] == str(key)
    assert env["TRIMO_REDIS_PASSWORD_FILE"] == str(layout.etc / "redis-password")
    assert env["TRIMO_CACHE_DIR"] == str(layout.directories[0])

    key.unlink()
    unwired = install(tmp_path, "--no-check")
    assert unwired.returncode == 0 and not layout.dropin.exists()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--redis-url", "http://r.example.internal"), "--redis-url: Value error"),
        (("--redis-url", "redis://r/0", "--concurrency", "0"), "--concurrency: Input should be"),
        (("--labels", "gpu"), "--labels without --redis-url"),
        ((), "runner.env is not there yet, and --redis-url was not given"),
        (("--redis-url", "redis://r/0", "--redis-password-file", "/nonexistent"), "No such file"),
    ],
)
def test_bad_input_gets_a_clear_answer(tmp_path: Path, args: tuple[str, ...], says: str) -> None:
    result = install(tmp_path, *args, "--no-check")
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    assert says in result.stderr.replace("\n", " "), result.stderr


def test_a_root_that_is_not_a_directory_is_refused(tmp_path: Path) -> None:
    result = install(tmp_path / "missing", "--redis-url", "redis://r/0", "--no-check")
    assert result.returncode == 1 and "is not a directory" in result.stderr


@pytest.mark.docker
def test_install_checks_the_runner_as_its_unit_will_run(tmp_path: Path, test_image: str) -> None:
    """doctor --runner with runner.env, the unit's variables and its credentials alone: the
    password reaches Redis only through /etc/trimo/redis-password, as LoadCredential= gives it."""
    password = "install-pw-77aa"
    server = RedisProcess(tmp_path / "redis", ["--appendonly", "yes", "--requirepass", password])
    server.start(ready=lambda: server_answers(server.port, password))
    root = tmp_path / "root"
    root.mkdir()
    try:
        args = ("--redis-url", f"redis://127.0.0.1:{server.port}/0", "--image", test_image)
        without = install(root, *args)
        done = install(root, *args, "--redis-password-file", "-", "--force", stdin=password)
    finally:
        server.stop()
    assert without.returncode == 1 and "✗ Redis is not reachable" in without.stdout
    assert done.returncode == 0, done.stdout + done.stderr
    assert "✓ settings load" in done.stdout and f"✓ image {test_image} is built" in done.stdout
    assert "✓ Redis 7" in done.stdout and "All good." in done.stdout
    assert f"cache directory {root}/var/cache/trimo is writable" in done.stdout
    assert password not in done.stdout + done.stderr
