"""`trimo` as a person uses it: the real command, real git, real Docker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import git
from tests.engine_helpers import has_file_named

TRIMO = [sys.executable, "-m", "app.ops.cli"]


def trimo(
    *args: str, cache: Path, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "TRIMO_CACHE_DIR": str(cache),
        "TRIMO_IMAGE": "trimo-agent:base",
        "TRIMO_AGENT": "script",
        "COLUMNS": "200",
        "TERM": "dumb",
        **(env or {}),
    }
    return subprocess.run(
        [*TRIMO, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.docker
def test_run_then_continue_then_list(sample_repo: Path, tmp_path: Path, test_image: str) -> None:
    cache = tmp_path / "cache"
    first = trimo(
        "run", "--repo", str(sample_repo), "--pipeline", "greet",
        "echo hi > hi.txt && git add hi.txt && git commit -qm 'Say hi'",
        cache=cache,
    )  # fmt: skip
    assert first.returncode == 0, first.stdout + first.stderr
    assert "The run succeeded" in first.stdout
    assert "Say hi" in first.stdout
    assert "hi.txt" in first.stdout

    second = trimo(
        "run", "--pipeline", "greet", "echo there >> hi.txt && git commit -qam 'Say more'",
        cache=cache, cwd=sample_repo,
    )  # fmt: skip
    assert second.returncode == 0, second.stdout + second.stderr
    assert git(sample_repo, "show", "trimo/greet:hi.txt") == "hi\nthere"

    listing = trimo("pipelines", "--repo", str(sample_repo), cache=cache)
    assert listing.returncode == 0
    assert "greet" in listing.stdout and "trimo/greet" in listing.stdout
    assert "2 run(s)" in listing.stdout


@pytest.mark.docker
def test_failing_run_exits_non_zero_with_the_reason(
    sample_repo: Path, tmp_path: Path, test_image: str
) -> None:
    result = trimo(
        "run", "--repo", str(sample_repo), "echo partial > p.txt; exit 7", cache=tmp_path / "c"
    )
    assert result.returncode == 1
    assert "code 7" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.docker
def test_timeout_exits_124(sample_repo: Path, tmp_path: Path, test_image: str) -> None:
    result = trimo(
        "run", "--repo", str(sample_repo), "--timeout", "0.05", "sleep 60", cache=tmp_path / "c"
    )
    assert result.returncode == 124
    assert "timed out" in result.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "--agent", "nope", "x"], "unknown agent 'nope'"),
        (["run", "--network", "host", "x"], "Unknown network mode 'host'"),
        (["run", "--network", "host", "x"], "none (no network), allowlist"),
        (["run", "--network", "host", "x"], "or bridge (the whole internet)"),
        (["run", "--allow-host", "10.0.0.1", "x"], "'10.0.0.1' is an address"),
        (["run", "--allow-host", "*.com", "x"], "'*.com' is too wide"),
        (
            ["run", "--network", "none", "--allow-host", "pkgs.example.com", "x"],
            "--allow-host needs the allowlist network",
        ),
        (["run", "--pipeline", "Bad Name!", "x"], "not a valid pipeline name"),
    ],
)
def test_bad_input_gets_a_clear_message(
    sample_repo: Path, tmp_path: Path, args: list[str], expected: str
) -> None:
    result = trimo(*args, "--repo", str(sample_repo), cache=tmp_path / "c")
    assert result.returncode != 0
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_a_host_outside_the_runners_cap_is_refused(sample_repo: Path, tmp_path: Path) -> None:
    result = trimo(
        "run", "--repo", str(sample_repo), "--allow-host", "registry.example.com",
        "--allow-host", "example.org", "x",
        cache=tmp_path / "c", env={"TRIMO_RUNNER_ALLOWED_HOSTS": "*.example.com,pkgs.example.com"},
    )  # fmt: skip
    assert result.returncode == 1
    assert (
        "This machine does not allow the host example.org: TRIMO_RUNNER_ALLOWED_HOSTS allows "
        "only *.example.com, pkgs.example.com." in result.stderr
    )
    assert "add example.org to TRIMO_RUNNER_ALLOWED_HOSTS" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_help_names_every_network_mode(tmp_path: Path) -> None:
    result = trimo("run", "--help", cache=tmp_path)
    text = " ".join(result.stdout.replace("│", " ").split())
    assert "none | allowlist (default" in text and "| bridge" in text
    assert "--allow-host" in text and "TRIMO_RUNNER_ALLOWED_HOSTS" in text


@pytest.mark.docker
def test_an_allowlist_run_shows_and_sums_up_the_hosts_it_blocked(
    sample_repo: Path, tmp_path: Path, test_image: str
) -> None:
    script = (
        "for url in https://example.org/a https://example.org/b https://evil.test/c "
        "https://registry.example.com/d; do timeout 20 git ls-remote $url; done; "
        "echo '[bold]inert[/bold]'; true"
    )
    result = trimo(
        "run", "--repo", str(sample_repo), "--allow-host", "registry.example.com", script,
        cache=tmp_path / "c", env={"TRIMO_NETWORK": "allowlist"},
    )  # fmt: skip
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert out.count("CONNECT tunnel failed, response 403") == 3
    assert "⛔ the network blocked example.org ×2, evil.test ×1" in out
    assert "[bold]inert[/bold]" in out
    summary = out[out.index("The run succeeded") :]
    assert "The network blocked 2 host(s):\n  example.org ×2\n  evil.test ×1\n" in summary
    assert "trimo run --allow-host example.org" in summary
    assert "registry.example.com" not in summary


def test_outside_a_repository_says_what_to_do(tmp_path: Path) -> None:
    result = trimo("run", "--repo", str(tmp_path), "x", cache=tmp_path / "c")
    assert result.returncode == 1
    assert "not inside a git repository" in result.stderr
    assert "--repo" in result.stderr


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = trimo("--help", cache=tmp_path)
    assert result.returncode == 0
    for command in ("run", "pick", "pipelines", "doctor", "image", "runner"):
        assert command in result.stdout


@pytest.mark.docker
def test_doctor_reports_docker_and_a_missing_image(tmp_path: Path, test_image: str) -> None:
    env_image = "trimo-agent:does-not-exist"
    result = subprocess.run(
        [*TRIMO, "doctor"],
        env={**os.environ, "TRIMO_IMAGE": env_image, "TRIMO_CACHE_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Docker engine is reachable" in result.stdout
    assert f"{env_image!r} is not on this machine" in result.stdout
    assert "trimo image build" in result.stdout
    assert result.returncode == 1


@pytest.mark.docker
def test_doctor_says_which_credentials_each_agent_gets(tmp_path: Path, test_image: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIMO_")}
    result = subprocess.run(
        [*TRIMO, "doctor"],
        cwd=tmp_path,
        env={
            **env,
            "TRIMO_CACHE_DIR": str(tmp_path / "c"),
            "TRIMO_IMAGE": test_image,
            "TRIMO_CLAUDE_CODE_OAUTH_TOKEN": "sk-ant-oat-very-secret",
            "TRIMO_ANTHROPIC_API_KEY": "",  # as runner.env.example had it: no key
            "TRIMO_CODEX_AUTH_FILE": str(tmp_path / "absent" / "auth.json"),
            "COLUMNS": "300",
            "TERM": "dumb",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = result.stdout
    assert "✓ credentials for claude: TRIMO_CLAUDE_CODE_OAUTH_TOKEN\n" in out
    missing = tmp_path / "absent" / "auth.json"
    assert f"! credentials for codex: ChatGPT sign-in {missing} (missing)\n" in out
    assert "TRIMO_CODEX_AUTH_FILE (a ChatGPT sign-in" in out
    assert "! credentials for aider: none\n" in out
    assert "credentials for script" not in out
    assert "aider is installed in the full image (`trimo image build`)" in out
    assert "sk-ant-oat-very-secret" not in out + result.stderr

    (tmp_path / "auth.json").write_text("{}")
    signed_in = subprocess.run(
        [*TRIMO, "doctor"],
        cwd=tmp_path,
        env={
            **env,
            "TRIMO_CACHE_DIR": str(tmp_path / "c"),
            "TRIMO_CODEX_AUTH_FILE": str(tmp_path / "auth.json"),
            "TRIMO_OPENAI_API_KEY": "sk-openai",
            "COLUMNS": "300",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        f"✓ credentials for codex: TRIMO_OPENAI_API_KEY, ChatGPT sign-in {tmp_path / 'auth.json'}"
        in signed_in.stdout
    )
    assert "! credentials for claude: none" in signed_in.stdout


@pytest.mark.docker
def test_doctor_shows_where_agents_call(tmp_path: Path, test_image: str) -> None:
    """The operator's endpoints: their hosts join the allowlist; a config that cannot be read
    fails doctor, as it would fail every codex run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIMO_")}
    env |= {"TRIMO_CACHE_DIR": str(tmp_path / "c"), "TRIMO_IMAGE": test_image, "COLUMNS": "300"}

    def doctor(**more: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*TRIMO, "doctor"], cwd=tmp_path, env=env | more,
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    assert "· agents call their vendors' APIs" in doctor().stdout
    config = tmp_path / "codex.toml"
    config.write_text(
        'model_provider = "gw"\n[model_providers.gw]\nbase_url = "http://10.0.0.7:4000"\n'
    )
    shown = doctor(
        TRIMO_ANTHROPIC_BASE_URL="https://gw.example.com", TRIMO_CODEX_CONFIG_FILE=str(config)
    ).stdout
    assert (
        "✓ claude and aider call Anthropic's API at https://gw.example.com "
        "(gw.example.com:443 joins their allowlist)"
    ) in shown
    assert f"✓ codex takes its config from TRIMO_CODEX_CONFIG_FILE {config}; 10.0.0.7:4000" in shown
    missing = doctor(TRIMO_CODEX_CONFIG_FILE=str(tmp_path / "absent.toml"))
    assert f"✗ TRIMO_CODEX_CONFIG_FILE {tmp_path / 'absent.toml'} cannot be read" in missing.stdout
    assert missing.returncode == 1


def test_doctor_with_docker_unreachable(tmp_path: Path) -> None:
    result = subprocess.run(
        [*TRIMO, "doctor"],
        env={
            **os.environ,
            "DOCKER_HOST": "unix:///nonexistent.sock",
            "TRIMO_CACHE_DIR": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "Docker is not reachable" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def start_trimo(*args: str, cache: Path, cwd: Path) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "TRIMO_CACHE_DIR": str(cache),
        "TRIMO_IMAGE": "trimo-agent:base",
        "TRIMO_AGENT": "script",
        "TRIMO_NETWORK": "none",
        "COLUMNS": "200",
        "TERM": "dumb",
    }
    return subprocess.Popen(
        [*TRIMO, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip


def wait_for_file(root: Path, name: str, seconds: float = 60) -> None:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if has_file_named(root, name):
            return
        time.sleep(0.1)
    raise AssertionError(f"{name} never appeared under {root}")


@pytest.mark.docker
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_save_and_summarise(
    sample_repo: Path, tmp_path: Path, test_image: str, signum: signal.Signals
) -> None:
    import docker

    cache = tmp_path / "cache"
    proc = start_trimo(
        "run", "--pipeline", "sig", "echo wip > wip.txt; sleep 300", cache=cache, cwd=sample_repo
    )
    wait_for_file(cache / "pipelines", "wip.txt")
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "The run was stopped" in out and "stopped" in out
    assert git(sample_repo, "show", "trimo/sig:wip.txt") == "wip"
    left = docker.from_env().containers.list(all=True, filters={"label": "dev.trimo.pipeline=sig"})
    assert left == []


@pytest.mark.docker
def test_a_killed_run_is_saved_and_cleaned_up_by_the_next_command(
    sample_repo: Path, tmp_path: Path, test_image: str
) -> None:
    import docker

    cache = tmp_path / "cache"
    proc = start_trimo(
        "run", "--pipeline", "dead", "echo wip > wip.txt; sleep 300", cache=cache, cwd=sample_repo
    )
    wait_for_file(cache / "pipelines", "wip.txt")
    proc.kill()
    proc.wait(30)
    client = docker.from_env()
    assert client.containers.list(all=True, filters={"label": "dev.trimo.pipeline=dead"})

    doctor = trimo("doctor", cache=cache, cwd=sample_repo)
    assert "Saved the work of run dead-1" in doctor.stdout, doctor.stdout + doctor.stderr
    assert git(sample_repo, "show", "trimo/dead:wip.txt") == "wip"
    assert client.containers.list(all=True, filters={"label": "dev.trimo.pipeline=dead"}) == []


@pytest.mark.docker
def test_markup_and_escapes_from_the_agent_are_printed_inert(
    sample_repo: Path, tmp_path: Path, test_image: str
) -> None:
    cache = tmp_path / "cache"
    script = (
        "# [/oops] [link=https://evil.example]prompt[/link]\n"
        "echo x > x.txt && git add x.txt && "
        "git commit -qm \"[/oops] $(printf '\\033]0;pwned\\007')title\" && "
        "printf '\\033[2J[bold]cleared[/bold]\\n'"
    )
    ran = trimo("run", "--repo", str(sample_repo), "--pipeline", "inert", script, cache=cache)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "[/oops] title" in ran.stdout and "[bold]cleared[/bold]" in ran.stdout
    assert "\x1b]0;" not in ran.stdout and "\x1b[2J" not in ran.stdout
    listed = trimo("pipelines", "--repo", str(sample_repo), cache=cache)
    assert listed.returncode == 0, listed.stderr
    assert "# [/oops] [link=https://evil.example]prompt[/link]" in listed.stdout
