"""`trimo run --attempts 3` in local mode, from the command to the ranked table, beside three
single `trimo run`s of the same prompt one after another, and one alone.

    PYTHONPATH=. python bench/local_attempts.py [--rounds 3] [--sleep 2] [--network none]

Real git, real Docker, the `script` agent (trimo-agent:base) and one `verify:` check, in a
scratch repository and cache. The script sleeps `--sleep` seconds, then commits. Each figure
is the command's whole wall time (start to exit, the table or summary printed). Prints the
median and max of each, and the attempts' median against the other two.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = "agent: script\nverify:\n  - name: tests\n    run: test -s work.txt\n"


def script(seconds: float) -> str:
    return f"sleep {seconds} && date +%N > work.txt && git add -A && git commit -qm Work"


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def scratch_repo(root: Path) -> Path:
    repo = root / "repo"
    (repo / ".github").mkdir(parents=True)
    (repo / ".github" / "trimo.yml").write_text(CONFIG)
    (repo / "README.md").write_text("# bench\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "-c", "user.email=b@example.com", "-c", "user.name=B", "add", "-A")
    git(repo, "-c", "user.email=b@example.com", "-c", "user.name=B", "commit", "-qm", "Start")
    return repo


def timed_trimo(env: dict[str, str], *args: str) -> float:
    """Seconds `trimo ARGS` took, start to exit; it must exit 0."""
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "app.ops.cli", *args], env=env, capture_output=True, text=True
    )
    took = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"trimo {' '.join(args[:4])} … failed:\n{done.stdout}{done.stderr}")
    return took


def summary(samples: list[float]) -> str:
    return f"median {statistics.median(samples):6.2f} s, max {max(samples):6.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sleep", type=float, default=2.0)
    parser.add_argument("--network", default="none", choices=("none", "allowlist"))
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trimo-bench-") as tmp:
        root = Path(tmp)
        repo = scratch_repo(root)
        env = {
            **os.environ,
            "TRIMO_CACHE_DIR": str(root / "cache"),
            "TRIMO_IMAGE": "trimo-agent:base",
            "TRIMO_AGENT": "script",
            "TRIMO_NETWORK": options.network,
            "TERM": "dumb",
        }
        prompt = script(options.sleep)
        run = ("run", "--repo", str(repo))
        timed_trimo(env, *run, "--pipeline", "warm", prompt)  # mirror, image, first start
        attempts, in_turn, alone = [], [], []
        for n in range(options.rounds):
            attempts.append(
                timed_trimo(env, *run, "--pipeline", f"a{n}", "--attempts", "3", prompt)
            )
            in_turn.append(
                sum(timed_trimo(env, *run, "--pipeline", f"s{n}-{k}", prompt) for k in range(3))
            )
            alone.append(timed_trimo(env, *run, "--pipeline", f"one{n}", prompt))
            said = f"attempts {attempts[-1]:.2f} s, 3 in turn {in_turn[-1]:.2f} s"
            print(f"round {n + 1}: {said}, one alone {alone[-1]:.2f} s", flush=True)
    print(f"\n3 attempts at once (trimo run --attempts 3): {summary(attempts)}")
    print(f"3 single runs one after another (baseline): {summary(in_turn)}")
    print(f"1 single run alone:                         {summary(alone)}")
    middle = statistics.median(attempts)
    print(
        f"attempts / 3 in turn: {middle / statistics.median(in_turn):.2f}×; "
        f"attempts / one alone: {middle / statistics.median(alone):.2f}× "
        f"({os.cpu_count()} cores, script sleeps {options.sleep:g} s, network {options.network})"
    )


if __name__ == "__main__":
    main()
