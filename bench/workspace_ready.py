"""How long until a workspace is ready for a follow-up run, beside a fresh `git clone`.

Builds a repository of FILES files and COMMITS commits with git fast-import, runs
one pipeline once (to create its mirror and workspace), then times the
preparation of the follow-up run's workspace (mirror fetch + checkout of the
pipeline branch + chown when root) over several repetitions.

    python bench/workspace_ready.py [--files 20000] [--commits 5000] [--repeat 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from runner import gitops


def make_repo(path: Path, files: int, commits: int) -> None:
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    lines: list[str] = []
    stamp = 1_700_000_000

    def commit(n: int, changes: list[tuple[str, str]]) -> None:
        lines.append("commit refs/heads/main")
        lines.append(f"committer Bench <bench@example.com> {stamp + n} +0000")
        message = f"commit {n}"
        lines.append(f"data {len(message)}")
        lines.append(message)
        for name, body in changes:
            data = body.encode()
            lines.append(f"M 644 inline {name}")
            lines.append(f"data {len(data)}")
            lines.append(body)

    commit(0, [(f"src/d{i // 500:03d}/file{i:05d}.txt", f"file {i}\n") for i in range(files)])
    for n in range(1, commits):
        i = (n * 7919) % files
        commit(n, [(f"src/d{i // 500:03d}/file{i:05d}.txt", f"file {i} v{n}\n")])
    stream = ("\n".join(lines) + "\n").encode()
    subprocess.run(["git", "fast-import", "--quiet"], cwd=path, input=stream, check=True)
    subprocess.run(["git", "checkout", "-q", "-f", "main"], cwd=path, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--commits", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="trimo-bench-"))
    try:
        repo = root / "repo"
        t0 = time.perf_counter()
        make_repo(repo, args.files, args.commits)
        built = time.perf_counter() - t0
        print(f"repository: {args.files} files, {args.commits} commits ({built:.1f}s to build)")

        t0 = time.perf_counter()
        subprocess.run(
            ["git", "clone", "-q", "--no-local", str(repo), str(root / "clone")], check=True
        )
        clone_s = time.perf_counter() - t0

        mirrors = root / "cache" / "mirrors"
        mirror = gitops.ensure_mirror(mirrors, str(repo))
        ws = root / "cache" / "workspaces" / "bench"
        t0 = time.perf_counter()
        gitops.prepare_workspace(ws, mirror, "trimo/bench", "main")
        first_s = time.perf_counter() - t0

        samples = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            mirror = gitops.ensure_mirror(mirrors, str(repo))
            gitops.prepare_workspace(ws, mirror, "trimo/bench", "main")
            if os.geteuid() == 0:
                gitops.hand_over(ws, 1000)
            samples.append(time.perf_counter() - t0)
        print(f"fresh `git clone` of the repository:          {clone_s:6.3f} s")
        print(f"first workspace of a pipeline (from mirror):  {first_s:6.3f} s")
        print(
            f"follow-up workspace ready (fetch+checkout{'+chown' if os.geteuid() == 0 else ''}): "
            f"median {statistics.median(samples):.3f} s, max {max(samples):.3f} s "
            f"over {args.repeat} runs"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
