"""Local pipelines: their runs, kept in the repository's own git directory.

`<git-common-dir>/trimo/pipelines/<name>.json` travels with the repository and
needs no server; the branch is `trimo/<name>`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from pydantic import BaseModel, Field

from runner import gitops
from runner.errors import TrimoError
from runner.job import RunRecord

PIPELINE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


class LocalPipeline(BaseModel):
    name: str
    branch: str
    base_branch: str
    runs: list[RunRecord] = Field(default_factory=list)


def repo_root(path: Path) -> Path:
    """The top of the git repository containing `path`, or a clear error."""
    proc = gitops.git(path, "rev-parse", "--show-toplevel", check=False)
    if proc.returncode != 0:
        raise TrimoError(
            f"{path} is not inside a git repository.",
            "run `trimo run` inside a repository, or pass --repo PATH",
        )
    return Path(proc.stdout.strip())


def current_branch(repo: Path) -> str | None:
    proc = gitops.git(repo, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    return proc.stdout.strip() or None


def _store(repo: Path) -> Path:
    common = gitops.git(repo, "rev-parse", "--git-common-dir").stdout.strip()
    return (repo / common).resolve() / "trimo" / "pipelines"


def name_from_prompt(prompt: str) -> str:
    words = re.findall(r"[a-z0-9]+", prompt.lower())[:6]
    return "-".join(words)[:40].strip("-") or "run"


def validate_name(name: str) -> str:
    if not PIPELINE_NAME_RE.match(name):
        raise TrimoError(
            f"{name!r} is not a valid pipeline name.",
            "use lowercase letters, digits, '.', '_' and '-' (up to 63 characters)",
        )
    return name


def load(repo: Path, name: str) -> LocalPipeline | None:
    path = _store(repo) / f"{name}.json"
    if not path.exists():
        return None
    try:
        return LocalPipeline.model_validate_json(path.read_text())
    except ValueError as exc:
        raise TrimoError(f"The record of pipeline {name!r} is damaged: {path}: {exc}") from exc


def save(repo: Path, pipeline: LocalPipeline) -> None:
    store = _store(repo)
    store.mkdir(parents=True, exist_ok=True)
    tmp = store / f".{pipeline.name}.json.tmp"
    tmp.write_text(json.dumps(pipeline.model_dump(mode="json"), indent=2))
    tmp.replace(store / f"{pipeline.name}.json")


def list_all(repo: Path) -> list[LocalPipeline]:
    store = _store(repo)
    found = []
    for path in sorted(store.glob("*.json")) if store.is_dir() else []:
        pipeline = load(repo, path.stem)
        if pipeline is not None:
            found.append(pipeline)
    return found


def unique_name(repo: Path, base: str) -> str:
    name, n = base, 2
    while load(repo, name) is not None:
        name, n = f"{base}-{n}", n + 1
    return name
