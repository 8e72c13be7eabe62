"""Whether the repository ignores each kept workspace path at a commit.

Setup keeps its workspace paths out of git (git in the sandbox would otherwise clean them
away or commit them), so each must be in the repository's .gitignore at the commit a run,
check or preview starts from. The ignore state is not part of the cache key (an edit of
.gitignore would then set up again, to fail the same way); it is checked on every look-up
instead, before the entry is made or restored. Only the .gitignore files that can decide a
path (at the root and in each directory above it) are read from the trusted mirror into a
scratch repository, where git decides: nothing of the agent's is read or run.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from runner import gitops
from runner.setup.spec import HOME_PREFIX

IGNORE_FILE = ".gitignore"


def not_ignored(mirror: Path, sha: str, paths: list[str]) -> list[str]:
    """The workspace paths among `paths` that the repository does not ignore at `sha`."""
    kept = [path for path in paths if not path.startswith(HOME_PREFIX)]
    if not kept:
        return []
    with tempfile.TemporaryDirectory(prefix="trimo-ignored-") as scratch:
        place = Path(scratch)
        gitops.git(place, "init", "-q", what="a scratch repository")
        for name in sorted({rule for path in kept for rule in _rules_above(path)}):
            blob = gitops.git(mirror, "cat-file", "blob", f"{sha}:{name}", check=False)
            if blob.returncode == 0:
                (place / name).parent.mkdir(parents=True, exist_ok=True)
                (place / name).write_text(blob.stdout)
        decided = gitops.git(
            place, "-c", "core.excludesFile=/dev/null", "check-ignore", "--no-index", "--",
            *(f"{path}/" for path in kept), check=False,
        )  # fmt: skip
    ignored = set(decided.stdout.splitlines())
    return [path for path in kept if f"{path}/" not in ignored]


def _rules_above(path: str) -> list[str]:
    """The .gitignore files that can decide `path`: at the root and in each directory above."""
    parts = path.split("/")[:-1]
    return [IGNORE_FILE] + [
        "/".join([*parts[: depth + 1], IGNORE_FILE]) for depth in range(len(parts))
    ]


def not_ignored_reason(path: str) -> str:
    return (
        f"the setup keeps `{path}`, which the repository's .gitignore does not list: "
        f"add `{path}/` to .gitignore (git in the sandbox would clean it away or commit it)"
    )
