"""`trimo run` verifies with the repository's own `.github/trimo.yml`; `--no-verify` skips."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.errors import TrimoError
from runner.verify import read_checks
from tests.conftest import git
from tests.test_cli import trimo

CONFIG = """\
agent: script
verify:
  - name: tests
    run: grep -qx hi hi.txt && echo '3 passed'
  - name: lint
    run: "printf 'hi.txt: \\\\033[31mtrailing space\\\\033[0m\\\\n'; exit 1"
verify_timeout_minutes: 2
"""
SAY_HI = "echo hi > hi.txt && git add hi.txt && git commit -qm 'Say hi'"


def with_config(repo: Path, text: str) -> None:
    (repo / ".github").mkdir(exist_ok=True)
    (repo / ".github" / "trimo.yml").write_text(text)
    git(repo, "add", ".github/trimo.yml")
    git(repo, "commit", "-qm", "Checks")


@pytest.mark.docker
def test_the_summary_lists_the_checks_and_no_verify_skips_them(
    sample_repo: Path, tmp_path: Path, test_image: str
) -> None:
    with_config(sample_repo, CONFIG)
    cache = tmp_path / "cache"
    checked = trimo("run", "--repo", str(sample_repo), "--pipeline", "greet", SAY_HI, cache=cache)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    out = checked.stdout
    assert "checks failing: lint" in out
    assert "Checks on " in out and "(failing: lint)" in out
    assert "✓ tests" in out and "✗ lint" in out and "exit code 1" in out
    assert "hi.txt: trailing space" in out and "\x1b" not in out
    assert git(sample_repo, "show", "trimo/greet:hi.txt") == "hi", "the work stays"

    skipped = trimo(
        "run", "--repo", str(sample_repo), "--pipeline", "greet", "--no-verify",
        "echo more >> hi.txt && git commit -qam More", cache=cache,
    )  # fmt: skip
    assert skipped.returncode == 0, skipped.stdout + skipped.stderr
    assert "Checks on" not in skipped.stdout


def test_a_broken_verify_section_is_a_clear_refusal(sample_repo: Path, tmp_path: Path) -> None:
    with_config(sample_repo, "verify: [{name: tests}]\n")
    result = trimo("run", "--repo", str(sample_repo), "echo", cache=tmp_path / "c")
    assert result.returncode != 0
    assert "verify.0.run" in result.stdout + result.stderr
    assert "--no-verify" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("verify: [{name: a, run: x}, {name: a, run: y}]", "two checks named 'a'"),
        ("verify: [", "has a problem in its checks"),
        ("verify_timeout_minutes: 0", "verify_timeout_minutes"),
        ("x" * 70_000, "larger than 64 KiB"),
    ],
)
def test_read_checks_refuses_clearly(text: str, says: str) -> None:
    with pytest.raises(TrimoError) as caught:
        read_checks(text, ".github/trimo.yml on main")
    assert says in str(caught.value)


def test_read_checks_ignores_the_rest() -> None:
    checks, seconds = read_checks("agent: claude\npreview: {command: x}\n", "here")
    assert (checks, seconds) == ([], 600)
    checks, seconds = read_checks(CONFIG, "here")
    assert [c.name for c in checks] == ["tests", "lint"] and seconds == 120
