"""The git server's pre-receive hook: the rules GitHub applies to a push, in its words.

Installed into each bare repository by `gitserver.install_protection` and run by
`git receive-pack` with the repository as its working directory. It reads the rules in
`FAKEGITHUB_RULES` (JSON, set per push from the token and the repository) and the
protected branches in `fakegithub-protected`, and writes the reason for each refused ref
to `FAKEGITHUB_REASONS`, so the server can say it the way GitHub does:
`! [remote rejected] ref -> ref (<reason>)`.

Standard library only: it runs under whatever Python started the stand-in.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

ZERO = "0" * 40
HOOK_DECLINED = "pre-receive hook declined"
RULES_DECLINED = "push declined due to repository rule violations"
SCAN_LIMIT = 1024 * 1024  # push protection reads blobs up to this size
SECRETS = (
    ("GitHub Personal Access Token", re.compile(rb"\bghp_[A-Za-z0-9]{36}\b")),
    ("GitHub Personal Access Token", re.compile(rb"\bgithub_pat_[A-Za-z0-9_]{82}\b")),
    ("Amazon AWS Access Key ID", re.compile(rb"\bAKIA[0-9A-Z]{16}\b")),
    ("Slack API Token", re.compile(rb"\bxox[baprs]-[0-9A-Za-z-]{10,48}\b")),
)
MB = 1024 * 1024


def git(*args: str, input: bytes | None = None) -> bytes:
    return subprocess.run(["git", *args], input=input, capture_output=True, check=True).stdout


def new_commits(new: str) -> list[str]:
    """Commits the push brings that no ref has yet, oldest first."""
    return git("rev-list", "--reverse", new, "--not", "--all").decode().split()


def changed_blobs(commit: str) -> list[tuple[str, str]]:
    """(path, blob sha) of each file `commit` adds or changes."""
    out = git("diff-tree", "-r", "--root", "--no-commit-id", "--no-renames", "-z", commit)
    fields = out.split(b"\0")
    found = []
    for meta, path in zip(fields[0::2], fields[1::2], strict=False):
        parts = meta.decode().split()
        if len(parts) == 5 and parts[3] != ZERO and not parts[2].startswith("16"):
            found.append((path.decode(errors="replace"), parts[3]))
    return found


def signed(commit: str) -> bool:
    header = git("cat-file", "commit", commit).split(b"\n\n", 1)[0]
    return any(line.startswith(b"gpgsig") for line in header.splitlines())


def check(ref: str, new: str, rules: dict[str, object], web: str) -> tuple[str, list[str]] | None:
    """(reason, lines for stderr) when GitHub would refuse updating `ref` to `new`."""
    commits = new_commits(new)
    if rules.get("signed_commits"):
        unsigned = [c for c in commits if not signed(c)]
        if unsigned:
            lines = [
                f"error: GH013: Repository rule violations found for {ref}.",
                f"Review all repository rules at {web}/rules?ref={quote(ref, safe='')}",
                "",
                "- Commits must have verified signatures.",
                f"  Found {len(unsigned)} violation{'s' if len(unsigned) > 1 else ''}:",
                "",
                *(f"  {c}" for c in unsigned),
                "",
            ]
            return RULES_DECLINED, lines
    limit = int(str(rules.get("max_file_bytes", 100 * MB)))
    seen: set[str] = set()
    for commit in commits:
        for path, blob in changed_blobs(commit):
            if path.startswith(".github/workflows/") and not rules.get("workflows", True):
                return (
                    "refusing to allow a GitHub App to create or update workflow"
                    f" `{path}` without `workflows` permission",
                    [],
                )
            if blob in seen:
                continue
            seen.add(blob)
            size = int(git("cat-file", "-s", blob))
            if size > limit:
                return HOOK_DECLINED, [
                    f"error: Trace: {secrets.token_hex(32)}",
                    "error: See https://gh.io/lfs for more information.",
                    f"error: File {path} is {size / MB:.2f} MB; this exceeds GitHub's file"
                    f" size limit of {limit / MB:.2f} MB",
                    "error: GH001: Large files detected. You may want to try Git Large File"
                    " Storage - https://git-lfs.github.com.",
                ]
            if rules.get("push_protection") and size <= SCAN_LIMIT:
                found = scan(git("cat-file", "blob", blob))
                if found is not None:
                    kind, line = found
                    return RULES_DECLINED, push_protection(ref, kind, commit, f"{path}:{line}", web)
    return None


def scan(data: bytes) -> tuple[str, int] | None:
    for kind, pattern in SECRETS:
        match = pattern.search(data)
        if match:
            return kind, data.count(b"\n", 0, match.start()) + 1
    return None


def push_protection(ref: str, kind: str, commit: str, location: str, web: str) -> list[str]:
    return [
        f"error: GH013: Repository rule violations found for {ref}.",
        "",
        "- GITHUB PUSH PROTECTION",
        "  —————————————————————————————————————————",
        "    Resolve the following violations before pushing again",
        "",
        "    - Push cannot contain secrets",
        "",
        "    ",
        "     (?) Learn how to resolve a blocked push",
        "     https://docs.github.com/code-security/secret-scanning/working-with-secret-"
        "scanning-and-push-protection/working-with-push-protection-from-the-command-line"
        "#resolving-a-blocked-push",
        "    ",
        "    ",
        f"      —— {kind} ——————————————————————",
        "       locations:",
        f"         - commit: {commit}",
        f"           path: {location}",
        "    ",
        "       (?) To push, remove secret from commit(s) or follow this URL to allow the secret.",
        f"       {web}/security/secret-scanning/unblock-secret/{secrets.token_hex(14)}",
        "    ",
        "",
        "",
    ]


def main() -> int:
    rules: dict[str, object] = json.loads(os.environ.get("FAKEGITHUB_RULES") or "{}")
    web = str(rules.get("web", "https://github.com/owner/repo"))
    marker = Path("fakegithub-protected")
    protected = set(marker.read_text().split()) if marker.exists() else set()
    reasons: dict[str, str] = {}
    for line in sys.stdin.read().splitlines():
        _old, new, ref = line.split()
        if ref in protected:
            print(f"error: GH006: Protected branch update failed for {ref}.", file=sys.stderr)
            print("error: Changes must be made through a pull request.", file=sys.stderr)
            reasons[ref] = "protected branch hook declined"
            continue
        if new == ZERO:
            continue
        refused = check(ref, new, rules, web)
        if refused is not None:
            reason, lines = refused
            reasons[ref] = reason
            for text in lines:
                print(text, file=sys.stderr)
    target = os.environ.get("FAKEGITHUB_REASONS")
    if target and reasons:
        Path(target).write_text(json.dumps(reasons))
    return 1 if reasons else 0


if __name__ == "__main__":
    sys.exit(main())
