"""The cache key of a setup: what makes its result reusable, and nothing else.

An entry is reused only for the same repository (entries are kept apart per repository,
`runner.setup.store`), the same image (by id, not by tag), the same `run` text and
`paths`, and the same content of every `cache_key` file at the commit being set up (its
blob id in the trusted mirror, which is a hash of its content). A branch that changes its
lockfile gets an entry of its own.

`run` sees the whole checkout, though, not only those files: a commit on a pipeline's
branch (the agent's) may change what `run` executes and not the lockfile. So an entry made
from a commit that is not on the base branch is its pipeline's own (`scope`): the
repository's entries are made only from what its base branch holds.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from runner import gitops
from runner.setup.spec import SetupSpec

KEY_VERSION = "setup-1"
MISSING = "-"
"""What a `cache_key` file that is not in the commit counts as."""


def file_ids(mirror: Path, sha: str, files: list[str]) -> list[str]:
    """The object id of each of `files` at `sha` in the trusted mirror (MISSING if absent)."""
    found = []
    for name in files:
        proc = gitops.git(mirror, "rev-parse", "--verify", "--quiet", f"{sha}:{name}", check=False)
        found.append(proc.stdout.strip() if proc.returncode == 0 else MISSING)
    return found


def scope_of(mirror: Path, sha: str, base_branch: str | None, pipeline: str) -> str:
    """ "" when `sha` is on `base_branch` in the trusted mirror (an entry every run of the
    repository may share), else `pipeline` (an entry of that pipeline's own)."""
    base = gitops.branch_sha(mirror, base_branch) if base_branch else None
    return "" if base is not None and gitops.is_ancestor(mirror, sha, base) else pipeline


def setup_key(spec: SetupSpec, image_id: str, key_files: list[str], scope: str = "") -> str:
    """The key of `spec`'s result on `image_id`, its `cache_key` files being `key_files`
    (their object ids, in order), made for `scope` (`scope_of`): pure, so tests can see
    what changes it."""
    material = json.dumps(
        [
            KEY_VERSION,
            scope,
            image_id,
            spec.run,
            spec.paths,
            list(zip(spec.cache_key, key_files, strict=True)),
        ],
        separators=(",", ":"),
    )
    return hashlib.sha256(material.encode()).hexdigest()[:32]
