"""The deployment docs walked as a stranger would: every file, setting and `trimo` command
they name exists, and the steps that can run here (the secrets, a runner machine) are run
as written, against a temporary directory in place of /etc and /opt/trimo."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from app.ops.cli import cli
from app.ops.setup import RegisteredApp, save_registration
from app.settings import AppSettings
from runner.basesettings import file_variable, secret_fields
from runner.install import Layout
from runner.settings import RunnerSettings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY_README = ROOT / "deploy" / "README.md"
OPERATORS_OWN = ("deploy/.env", "deploy/secrets", "deploy/*.pem", "deploy/github-app.pem")
"""Paths the docs name that an operator makes (git-ignored), not the repository."""


def deployment_docs() -> dict[str, str]:
    """deploy/README.md, and README.md's "Deployment" section."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("\n## Deployment\n")
    end = readme.index("\n## ", start + 1)
    return {"deploy/README.md": DEPLOY_README.read_text(), "README.md": readme[start:end]}


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", text, re.M | re.S)


def block_with(text: str, needle: str) -> str:
    found = [block for block in shell_blocks(text) if needle in block]
    assert len(found) == 1, f"one shell block with {needle!r} in deploy/README.md"
    return found[0]


REPO_PATH = r"(?<![\w/.$-])((?:deploy|scripts|sandbox|tests|bench)/[\w./*-]*\w)"
TOP_FILES = r"\b(requirements(?:-dev)?\.lock|CHANGELOG\.md|pyproject\.toml)\b"


def test_every_file_the_docs_name_is_in_the_repository() -> None:
    for doc, text in deployment_docs().items():
        named = set(re.findall(REPO_PATH, text)) | set(re.findall(TOP_FILES, text))
        base = (ROOT / doc).parent
        for link in re.findall(r"\]\(([\w./-]+)\)", text):
            named.add(str((base / link).resolve().relative_to(ROOT)))
        missing = sorted(
            name for name in named
            if not name.startswith(OPERATORS_OWN) and not (ROOT / name).exists()
        )  # fmt: skip
        assert not missing, f"{doc} names files that are not in the repository: {missing}"


def code_variables() -> set[str]:
    """Every TRIMO_ variable something reads: the settings (and secrets' _FILE variants), and
    the names in code, compose, the units, Caddy's file and the scripts."""
    names = set()
    for settings in (AppSettings, RunnerSettings):
        names |= {f"TRIMO_{field.upper()}" for field in settings.model_fields}
        names |= {file_variable(field) for field in secret_fields(settings)}
    sources = [
        *ROOT.glob("app/**/*.py"), *ROOT.glob("runner/**/*.py"), *ROOT.glob("scripts/*"),
        *ROOT.glob("deploy/*"), *ROOT.glob("deploy/prometheus/*"), *ROOT.glob("sandbox/**/*"),
    ]  # fmt: skip
    for path in sources:
        if path.is_file() and path.name != "README.md":
            names |= set(re.findall(r"TRIMO_[A-Z0-9_]*[A-Z0-9]", path.read_text(errors="replace")))
    return names


def test_every_variable_the_docs_name_is_read_by_trimo() -> None:
    known = code_variables()
    for doc, text in deployment_docs().items():
        named = set(re.findall(r"TRIMO_[A-Z0-9_]*[A-Z0-9]", text))
        # `TRIMO_RUNNER_ALLOWED_{REPOS,…}` and `_IMAGES`-style shorthands name a family.
        unknown = sorted(n for n in named if not any(k.startswith(n) for k in known))
        assert not unknown, f"{doc} names settings nothing reads: {unknown}"


def test_every_trimo_command_and_option_the_docs_use_exists() -> None:
    """`trimo …` in code (a span, or a line running bin/trimo): its command, and each
    --option, as the command line takes them."""
    used = []
    for text in deployment_docs().values():
        for match in re.finditer(r"(?:`|bin/)trimo((?: (?:[a-z][a-z-]*|--[a-z][\w-]*))+)", text):
            used.append(match.group(1).split())
    assert ["runner", "install", "--redis-url"] in [words[:3] for words in used]
    root = typer.main.get_command(cli)
    for words in used:
        command, rest = root, list(words)
        while rest and rest[0] in (subcommands := getattr(command, "commands", {})):
            command = subcommands[rest.pop(0)]
        assert command is not root or words[0].startswith("--"), f"no command `trimo {words[0]}`"
        options = {opt for param in command.params for opt in param.opts}
        unknown = [word for word in rest if word.startswith("--") and word not in options]
        assert not unknown, f"`trimo {' '.join(words)}`: no option {unknown}"


def test_the_secrets_step_runs_as_written(tmp_path: Path) -> None:
    """deploy/README.md, "Settings and secrets", from the .env `trimo setup` writes: every
    secret in its file, 0600 (before the doc's umask, they were 0644 until a later chmod,
    and three of them for good on systemd)."""
    app = RegisteredApp(
        id=42, slug="trimo-test", name="Trimo test", html_url="https://github.example.com/apps/t",
        owner="octo-org", pem="-----BEGIN RSA PRIVATE KEY-----\nk\n-----END RSA PRIVATE KEY-----\n",
        webhook_secret="hook-5e1f", client_id="Iv1.abc", client_secret="client-77aa",
    )  # fmt: skip
    save_registration(app, tmp_path / ".env", "https://api.github.example.com")
    block = block_with(DEPLOY_README.read_text(), "openssl rand -hex 32")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    secrets = tmp_path / "deploy" / "secrets"
    session = re.search(r"^TRIMO_SESSION_SECRET=(\S+)$", (tmp_path / ".env").read_text(), re.M)
    assert session
    assert (secrets / "webhook-secret").read_text() == "hook-5e1f"
    assert (secrets / "github-client-secret").read_text() == "client-77aa"
    assert (secrets / "session-secret").read_text() == session.group(1).strip("'\"")
    assert (secrets / "github-app.pem").read_text() == app.pem
    for name in ("redis-password", "metrics-token"):
        assert re.fullmatch(r"[0-9a-f]{64}\n", (secrets / name).read_text())
    assert (secrets.stat().st_mode & 0o777) == 0o700
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in secrets.iterdir()}
    assert set(modes.values()) == {"0o600"}, modes


SKIPPED = {
    "sudo apt-get install ": "installs Debian packages: this machine has them",
    "sudo git clone ": "the checkout: the suite runs in one (the `cd` goes there)",
    "sudo python3 -m venv ": "makes the venv: the suite runs in one",
    "sudo .venv/bin/pip install ": "installs Trimo: the suite runs it",
    "sudo .venv/bin/trimo image build": "builds the full agent image (minutes; the suite's "
    "images are built by the same command)",
    "sudo systemctl ": "systemd is not this process's to drive",
}
RUNNABLE = (
    "sudo install -d ",
    "sudo sh -c 'umask 077; cat > /etc/trimo/",
    "sudo .venv/bin/trimo runner install ",
)


def runnable(line: str, root: Path) -> str | None:
    """The doc's line as it runs here: /etc under `root`, the suite's trimo, no check of a
    runner that will not start; None for a step that cannot run here (SKIPPED says why)."""
    if any(line.startswith(prefix) for prefix in SKIPPED):
        return None
    assert line.startswith(RUNNABLE), f"a step the test does not know: {line!r}"
    line = line.removeprefix("sudo ").replace("/etc/trimo", f"{root}/etc/trimo")
    trimo = f"{shlex.quote(sys.executable)} -m app.ops.cli"
    if line.startswith(".venv/bin/trimo runner install"):
        line = line.replace(".venv/bin/trimo", trimo, 1)
        line += f" --root {shlex.quote(str(root))} --no-check"
    return line


def test_a_runner_machine_is_set_up_as_written(tmp_path: Path) -> None:
    block = block_with(DEPLOY_README.read_text(), "trimo runner install")
    root = tmp_path / "root"
    root.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIMO_")}
    pasted = {"redis-password": "pw-from-the-app-host\n", "anthropic-api-key": "sk-ant-5e1f\n"}
    for raw in block.splitlines():
        line = raw.split("  #")[0].strip()
        command = runnable(line, root) if line else None
        if command is None:
            continue
        target = re.search(r"cat > \S*/etc/trimo/([\w-]+)", command)
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", command], cwd=tmp_path, env=env, text=True,
            input=pasted[target.group(1)] if target else "", capture_output=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, f"{raw}\n{done.stdout}{done.stderr}"
    layout = Layout(root)
    runner_env = layout.env_file.read_text().splitlines()
    assert "TRIMO_REDIS_URL=redis://redis.example.internal:16379/0" in runner_env
    assert "TRIMO_RUNNER_LABELS=default" in runner_env
    assert (layout.etc / "redis-password").read_text() == pasted["redis-password"]
    assert "anthropic-api-key:/etc/trimo/anthropic-api-key" in layout.dropin.read_text()
    for path in (layout.env_file, layout.etc / "redis-password", layout.etc / "anthropic-api-key"):
        assert path.stat().st_mode & 0o777 == 0o600, path
    assert "ExecStart=" in layout.unit.read_text()


@pytest.mark.parametrize("line", ["sudo rm -rf /opt/trimo", "curl https://example.com | sh"])
def test_a_step_the_walk_does_not_know_fails_it(tmp_path: Path, line: str) -> None:
    with pytest.raises(AssertionError, match="a step the test does not know"):
        runnable(line, tmp_path)
