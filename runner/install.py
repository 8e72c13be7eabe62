"""`trimo runner install`: what a runner machine needs from deploy/, in place, under a root
directory (`/`, or a test's temporary one): /etc/trimo (0700) with runner.env and the secret
files (0600), the systemd unit with its credentials drop-in, and the unit's directories.

It never replaces what an operator wrote without `force`: a kept runner.env or secret file
is said so, and only its mode is tightened. The unit is Trimo's own (an operator's changes
belong in `systemctl edit`'s drop-ins), so it is rewritten when it differs.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from runner.basesettings import file_variable, secret_fields
from runner.doctor import Check
from runner.errors import TrimoError
from runner.settings import RunnerSettings

DEPLOY_DIR = Path(__file__).resolve().parent.parent / "deploy"
UNIT = "trimo-runner.service"
ENV_EXAMPLE = "runner.env.example"
REDIS_PASSWORD = "redis-password"
EXTRA_CREDENTIALS = {
    name.replace("_", "-"): name
    for name in secret_fields(RunnerSettings)
    if name != "redis_password"
}
"""The agents' secrets a runner takes as files in /etc/trimo (`anthropic-api-key`, …), each
wired into the unit by the drop-in when its file is there."""
OPTIONS = {
    "redis_url": "--redis-url",
    "runner_id": "--runner-id",
    "runner_labels": "--labels",
    "runner_concurrency": "--concurrency",
    "image": "--image",
}
"""The settings `trimo runner install` writes into runner.env, and the option for each."""


@dataclass(frozen=True)
class Layout:
    """Where a runner's files are, under `root`."""

    root: Path

    def at(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    @property
    def etc(self) -> Path:
        return self.at("/etc/trimo")

    @property
    def env_file(self) -> Path:
        return self.etc / "runner.env"

    @property
    def unit(self) -> Path:
        return self.at(f"/etc/systemd/system/{UNIT}")

    @property
    def dropin(self) -> Path:
        return self.at(f"/etc/systemd/system/{UNIT}.d/credentials.conf")

    @property
    def directories(self) -> tuple[Path, ...]:
        """The unit's CacheDirectory= and StateDirectory= (systemd makes them too)."""
        return self.at("/var/cache/trimo"), self.at("/var/lib/trimo-runner")


@dataclass(frozen=True)
class Step:
    path: Path
    done: str
    """What happened to it: wrote, kept, unchanged, …, said as a person reads it."""


def settings_lines(values: Mapping[str, str | int]) -> dict[str, str]:
    """`values` (settings by field name) as runner.env's variables, checked as the runner
    checks them. A value that would break the file, or the setting, is refused by option."""
    variables: dict[str, str] = {}
    for field, value in values.items():
        text = str(value)
        if not text or re.search(r"[\x00-\x1f\x7f\"'\\$`]", text) or text != text.strip():
            raise TrimoError(
                f"{OPTIONS[field]} {text!r}: not a plain value",
                "give it without quotes, spaces at its ends, line breaks or $",
            )
        variables[f"TRIMO_{field.upper()}"] = text
    try:
        RunnerSettings.model_validate(dict(values))
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise TrimoError(
            f"{OPTIONS.get(where, where)}: {error['msg']}",
            "see deploy/runner.env.example for what each setting takes",
        ) from None
    return variables


def env_text(example: str, variables: Mapping[str, str]) -> str:
    """runner.env.example with `variables` set: each replaces its line (commented or not),
    or is added at the end."""
    left = dict(variables)
    lines = []
    for line in example.splitlines():
        match = re.match(r"#?\s*(TRIMO_[A-Z0-9_]+)=", line)
        if match and match.group(1) in left:
            line = f"{match.group(1)}={left.pop(match.group(1))}"
        lines.append(line)
    lines += [f"{name}={value}" for name, value in left.items()]
    return "\n".join(lines) + "\n"


def unit_text(template: str, trimo: Path) -> str:
    """The unit, starting `trimo` (the command this install runs as) rather than /opt/trimo's."""
    text, found = re.subn(r"(?m)^ExecStart=\S+", f"ExecStart={trimo}", template)
    if found != 1:
        raise TrimoError(f"{UNIT} has no single ExecStart= line", "restore deploy/ from git")
    return text


def dropin_text(present: Iterable[str]) -> str | None:
    """The unit's drop-in handing each agent secret file in /etc/trimo to the runner as a
    systemd credential; None when there is none."""
    lines = []
    for name in sorted(present):
        lines.append(f"LoadCredential={name}:/etc/trimo/{name}")
        lines.append(f"Environment={file_variable(EXTRA_CREDENTIALS[name])}=%d/{name}")
    if not lines:
        return None
    head = "# Written by `trimo runner install`: the agents' keys in /etc/trimo, as credentials.\n"
    return head + "[Service]\n" + "\n".join(lines) + "\n"


def unit_environment(layout: Layout, unit: str, dropin: str | None) -> dict[str, str]:
    """The variables the unit sets (Environment=), with its paths under `layout`'s root:
    `%d/NAME` is the file its LoadCredential=NAME:PATH names."""
    text = unit + (dropin or "")
    sources = dict(re.findall(r"(?m)^LoadCredential=([^:\s]+):(\S+)$", text))
    found: dict[str, str] = {}
    for name, value in re.findall(r"(?m)^Environment=([A-Z0-9_]+)=(\S*)$", text):
        if value.startswith("%d/"):
            value = sources.get(value.removeprefix("%d/"), value)
        found[name] = str(layout.at(value)) if value.startswith("/") else value
    return found


def write_private(path: Path, data: bytes) -> None:
    """`data` in `path`, mode 0600, whole or not at all; a link at `path` is replaced, never
    followed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def _tighten(path: Path, mode: int) -> str:
    current = path.lstat().st_mode & 0o777
    if current & ~mode:
        path.chmod(mode)
        return f", mode {current:04o} made {mode:04o}"
    return ""


def place(path: Path, data: bytes, force: bool, mode: int = 0o600) -> Step:
    """`data` in `path` unless something else is there and `force` is not given."""
    if path.is_symlink() or (path.exists() and not path.is_file()):
        if not force:
            raise TrimoError(f"{path} is not a regular file", "remove it, or give --force")
    elif path.exists():
        if path.read_bytes() == data:
            return Step(path, "unchanged" + _tighten(path, mode))
        if not force:
            return Step(path, "kept (differs; --force replaces it)" + _tighten(path, mode))
    write_private(path, data)
    path.chmod(mode)
    return Step(path, "wrote")


def keep_or_write(path: Path, data: bytes | None, force: bool) -> Step:
    """A setting's or secret's file: an existing one is the operator's and is kept (its mode
    tightened) unless `force`; a new one is `data`, or empty when no value was given."""
    if data is None:
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise TrimoError(f"{path} is not a regular file", "remove it")
        if path.exists():
            return Step(path, "kept" + _tighten(path, 0o600))
        write_private(path, b"")
        return Step(path, "wrote (empty: fill it in)")
    return place(path, data, force)


def make_directory(path: Path) -> Step:
    if path.is_dir() and not path.is_symlink():
        return Step(path, "there")
    if path.exists() or path.is_symlink():
        raise TrimoError(f"{path} is not a directory", "remove it, or give another --root")
    path.mkdir(mode=0o700, parents=True)
    return Step(path, "made")


def install(
    layout: Layout,
    trimo: Path,
    variables: Mapping[str, str] | None,
    redis_password: bytes | None,
    force: bool,
) -> list[Step]:
    """Write the runner's files under `layout` (see the module's docstring). `variables` are
    runner.env's settings, None to keep an existing runner.env."""
    if not layout.root.is_dir():
        raise TrimoError(f"--root {layout.root} is not a directory", "make it first")
    if not os.access(layout.root, os.W_OK):
        raise TrimoError(f"cannot write under {layout.root}", "run it as root (sudo)")
    if variables is None and not layout.env_file.exists():
        raise TrimoError(
            f"{layout.env_file} is not there yet, and --redis-url was not given",
            "give --redis-url (and --runner-id, --labels, … as needed)",
        )
    example = (DEPLOY_DIR / ENV_EXAMPLE).read_text()
    steps = [make_directory(layout.etc), *map(make_directory, layout.directories)]
    env = None if variables is None else env_text(example, variables).encode()
    steps.append(keep_or_write(layout.env_file, env, force))
    steps.append(keep_or_write(layout.etc / REDIS_PASSWORD, redis_password, force))
    unit = unit_text((DEPLOY_DIR / UNIT).read_text(), trimo)
    steps.append(place(layout.unit, unit.encode(), force=True, mode=0o644))
    present = [name for name in EXTRA_CREDENTIALS if (layout.etc / name).is_file()]
    dropin = dropin_text(present)
    if dropin is not None:
        steps.append(place(layout.dropin, dropin.encode(), force=True, mode=0o644))
    elif layout.dropin.exists():
        layout.dropin.unlink()
        steps.append(Step(layout.dropin, "removed (no agent key in /etc/trimo)"))
    steps += [
        Step(layout.etc / name, "kept" + _tighten(layout.etc / name, 0o600)) for name in present
    ]
    return steps


def file_checks(layout: Layout, trimo: Path) -> list[Check]:
    """Each file is where the unit looks for it, private where it holds a secret."""
    checks = []
    for path in [layout.env_file, layout.etc / REDIS_PASSWORD]:
        mode = path.stat().st_mode & 0o777 if path.is_file() else None
        checks.append(
            Check("ok", f"{path} is there, mode 0600")
            if mode == 0o600
            else Check("fail", f"{path}: mode {mode:04o}" if mode else f"{path} is missing")
        )
    if (layout.etc.stat().st_mode & 0o007) != 0:
        checks.append(
            Check("warn", f"{layout.etc} is open to every user", f"chmod o-rwx {layout.etc}")
        )
    ok = os.access(trimo, os.X_OK)
    checks.append(
        Check("ok", f"the unit starts {trimo}")
        if ok
        else Check("fail", f"the unit starts {trimo}, which is not there", "install Trimo first")
    )
    return checks
