"""summarize_diff against the diff corpus (and unidiff 1.0.1's observations) and real git."""

from __future__ import annotations

import json
import os
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest

from runner import bounded, gitops, treecount
from runner.diffsummary import DiffSummary, FileChange, summarize_diff, unquote_git_path
from tests.conftest import CORPORA

DIFFS_DIR = CORPORA / "diffs"
OBSERVED: dict[str, dict[str, Any]] = json.loads(
    (DIFFS_DIR / "OBSERVED-unidiff-1.0.1.json").read_text()
)["results"]
DIFFS = sorted(DIFFS_DIR.rglob("*.diff"))

# unidiff keeps git's C-quoted names as written; we decode them.
DECODED = {
    '"new, complicated\\nfilen\\303\\270me"': "new, complicated\nfilenøme",
    '"new \\"complicated\\" filename"': 'new "complicated" filename',
    '"a/existing \\"complicated\\" filename"': 'existing "complicated" filename',
    '"\\345\\225\\206\\345\\223\\201\\350\\257\\246\\346\\203\\205.txt"': "商品详情.txt",
    '"A \\303\\242 B.py"': "A â B.py",
    '"docs/develop/Bug \\346\\216\\222\\346\\237\\245.md"': "docs/develop/Bug 排查.md",
}
# The git header shows an empty blob (e69de29) and no "new file mode": the file existed, empty.
# unidiff calls it added because its only hunk starts at "-0,0"; git says modified.
STATUS_DEVIATIONS = {
    ("diffs/go-diff/quoted_filename.diff", "商品详情.txt"): "modified",
}


def key(path: Path) -> str:
    return f"diffs/{path.relative_to(DIFFS_DIR)}"


PARSED = [p for p in DIFFS if OBSERVED[key(p)]["ok"]]


def read(path: Path) -> str:
    return path.read_bytes().decode("utf-8")


def observed_status(observation: dict[str, Any]) -> str:
    if observation["added"]:
        return "added"
    if observation["removed"]:
        return "removed"
    return "renamed" if observation["rename"] else "modified"


def test_every_corpus_diff_has_an_observation() -> None:
    assert len(DIFFS) >= 40
    assert {key(p) for p in DIFFS} == set(OBSERVED)


@pytest.mark.parametrize("path", DIFFS, ids=key)
def test_agrees_with_unidiff_observation(path: Path) -> None:
    observed = OBSERVED[key(path)]
    summary = summarize_diff(read(path))
    if not observed["ok"]:
        assert summary.parse_error == observed["error"]
        return
    assert summary.parse_error is None
    assert summary.files_changed == len(observed["files"])
    for got, want in zip(summary.files, observed["files"], strict=True):
        assert want["path"] in DECODED or not want["path"].startswith('"')
        path_ = DECODED.get(want["path"], want["path"])
        status = STATUS_DEVIATIONS.get((key(path), path_), observed_status(want))
        source = want["source_file"]
        old_path = DECODED.get(source, source.removeprefix("a/"))
        assert got == FileChange(
            path=path_,
            old_path=old_path if status == "renamed" else None,
            status=status,
            added=want["added_lines"],
            removed=want["removed_lines"],
            binary=want["binary"],
        )
    assert summary.added == sum(f["added_lines"] for f in observed["files"])
    assert summary.removed == sum(f["removed_lines"] for f in observed["files"])


# git's own reading of "diff --git <a> <b>" (equal halves) beats unidiff's greedy split.
FALLBACK_PATHS = {
    "diffs/go-diff/delete_empty_file.diff": [
        "Euler 0011/README.txt~",
        "Euler 0011/Euler0011.cpp",
        "Euler 0011/README.txt~",
        "Euler 0011/README.txt",
        "Euler 0011/README.txt~",
    ],
}


@pytest.mark.parametrize("path", PARSED, ids=key)
def test_fallback_scan_matches_unidiff(path: Path) -> None:
    text = read(path)
    expected = summarize_diff(text).files
    if key(path) in FALLBACK_PATHS:
        expected = [
            f.model_copy(update={"path": p})
            for f, p in zip(expected, FALLBACK_PATHS[key(path)], strict=True)
        ]
    corrupted = summarize_diff("\\ No newline at end of file\n" + text)
    assert corrupted.parse_error is not None
    assert corrupted.parse_error.startswith("UnidiffParseError: Unexpected marker")
    assert corrupted.files == expected


def test_fallback_counts_hunks_with_wrong_lengths() -> None:
    summary = summarize_diff(read(DIFFS_DIR / "unidiff" / "sample1.diff"))
    assert summary.parse_error is not None
    assert summary.files == [
        FileChange(
            path="/path/to/new",
            old_path="/path/to/original",
            status="renamed",
            added=12,
            removed=8,
        )
    ]


def test_fallback_keeps_files_of_a_truncated_diff() -> None:
    summary = summarize_diff(read(DIFFS_DIR / "unidiff" / "sample2.diff"))
    assert summary.parse_error == "UnidiffParseError: Hunk is shorter than expected"
    assert summary.files == [
        FileChange(path="content/base/src/nsContentUtils.cpp", added=1, removed=1),
        FileChange(path="js/src/jsfriendapi.cpp", added=8, removed=0),
    ]


def test_bare_hunks_have_no_file() -> None:
    summary = summarize_diff(read(DIFFS_DIR / "go-diff" / "oneline_hunk.diff"))
    assert summary.parse_error is not None
    assert summary.is_empty
    assert summary.files_changed == 0


def test_empty_and_non_diff_text() -> None:
    assert summarize_diff("") == DiffSummary()
    assert summarize_diff("just some words\nno diff here\n") == DiffSummary()


def test_never_raises_on_mangled_diffs() -> None:
    rng = random.Random(20240611)
    pieces = [
        "",
        "diff --git a/x b/x",
        "@@ -0,0 +1 @@",
        "@@ -1,3 +1 @@",
        "--- a/x",
        "+++ b/x",
        "GIT binary patch",
        "Binary files a/x and b/y differ",
        "rename from ",
        "new file mode 100644",
        "\\ No newline at end of file",
        '"',
        "\\",
        "\r",
        "\x00",
        "-",
        "+",
    ]
    texts = [read(p).split("\n") for p in DIFFS]
    errors = 0
    for _ in range(3000):
        lines = list(rng.choice(texts))
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(lines))
            if rng.random() < 0.4:
                del lines[i]
            elif rng.random() < 0.7:
                lines.insert(i, rng.choice(pieces))
            else:
                cut = rng.randrange(len(lines[i]) + 1)
                lines[i] = lines[i][:cut] + rng.choice(pieces) + lines[i][cut:]
            if not lines:
                lines = [""]
        text = "\n".join(lines)
        summary = summarize_diff(text)
        errors += summary.parse_error is not None
        plus = sum(line.startswith("+") for line in lines)
        minus = sum(line.startswith("-") for line in lines)
        assert 0 <= summary.added <= plus
        assert 0 <= summary.removed <= minus
    assert errors > 100  # the mutations did reach the fallback


def test_unquote_git_path() -> None:
    assert unquote_git_path('"caf\\303\\251.txt"') == "café.txt"
    assert unquote_git_path('"tab\\there \\"q\\" back\\\\slash"') == 'tab\there "q" back\\slash'
    assert unquote_git_path("plain name.txt") == "plain name.txt"
    assert unquote_git_path('"') == '"'
    assert unquote_git_path('"bad \\377 byte"') == "bad \ufffd byte"


# ---- a real repository --------------------------------------------------------------------

GIT_ENV = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, env=GIT_ENV, check=True, capture_output=True, text=True
    ).stdout


def write(repo: Path, name: str, data: str | bytes) -> None:
    path = repo / name
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data)


@pytest.fixture
def changed_repo(tmp_path: Path) -> tuple[Path, str, str]:
    """A repository whose second commit touches files in every way a run can."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "dev@example.com")
    git(repo, "config", "user.name", "Dev")
    write(repo, "keep.txt", "one\ntwo\nthree\nfour\nfive\n")
    write(repo, "old_name.py", "".join(f"line {i}\n" for i in range(10)))
    write(repo, "docs a.md", "".join(f"doc {i}\n" for i in range(6)))
    write(repo, "logo.png", bytes(range(256)) * 4)
    write(repo, "old.bin", b"\x00\x01\x02" * 30)
    write(repo, "gone.txt", "a\nb\nc\n")
    write(repo, "full.txt", "x\ny\n")
    write(repo, "empty.txt", "")
    write(repo, "tail.txt", "no newline")
    write(repo, "run.sh", "#!/bin/sh\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")
    base = git(repo, "rev-parse", "HEAD").strip()

    git(repo, "mv", "old_name.py", "new_name.py")
    write(repo, "new_name.py", "".join(f"line {i}\n" for i in range(10)).replace("3\n", "three\n"))
    git(repo, "mv", "docs a.md", "docs b.md")
    write(repo, "keep.txt", "one\nTWO\nthree\nfour\nfive\nsix\n")
    write(repo, "logo.png", bytes(range(256)) * 3 + b"\x00\x01")
    write(repo, "data.bin", b"\x00\xff" * 50)
    write(repo, "café.txt", "bonjour\n")
    write(repo, "empty.txt", "now\nfull\n")
    write(repo, "full.txt", "")
    write(repo, "tail.txt", "no newline, still\n")
    write(repo, "new_empty", "")
    (repo / "run.sh").chmod(0o755)
    git(repo, "rm", "-q", "gone.txt", "old.bin")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "change")
    return repo, base, git(repo, "rev-parse", "HEAD").strip()


EXPECTED = [
    FileChange(path="café.txt", status="added", added=1),
    FileChange(path="data.bin", status="added", binary=True),
    FileChange(path="docs b.md", old_path="docs a.md", status="renamed"),
    FileChange(path="empty.txt", status="modified", added=2),
    FileChange(path="full.txt", status="modified", removed=2),
    FileChange(path="gone.txt", status="removed", removed=3),
    FileChange(path="keep.txt", status="modified", added=2, removed=1),
    FileChange(path="logo.png", status="modified", binary=True),
    FileChange(path="new_empty", status="added"),
    FileChange(path="new_name.py", old_path="old_name.py", status="renamed", added=1, removed=1),
    FileChange(path="old.bin", status="removed", binary=True),
    FileChange(path="run.sh", status="modified"),
    FileChange(path="tail.txt", status="modified", added=1, removed=1),
]


@pytest.mark.parametrize("extra", [[], ["--binary"]], ids=["plain", "binary-patch"])
def test_real_git_diff(changed_repo: tuple[Path, str, str], extra: list[str]) -> None:
    repo, base, head = changed_repo
    text = git(repo, "diff", "-M", *extra, base, head)
    assert ("GIT binary patch" in text) == bool(extra)

    summary = summarize_diff(text)

    assert summary.parse_error is None
    assert summary.files == EXPECTED
    assert (summary.files_changed, summary.added, summary.removed) == (13, 7, 8)


def test_real_git_diff_agrees_with_numstat(changed_repo: tuple[Path, str, str]) -> None:
    repo, base, head = changed_repo
    summary = summarize_diff(git(repo, "diff", "-M", base, head))
    fields = git(repo, "diff", "-M", "--numstat", "-z", base, head).split("\0")
    numstat: dict[str, tuple[str, str]] = {}
    while fields and fields[0]:
        added, removed, name = fields.pop(0).split("\t")
        if not name:  # a rename: old and new name follow as their own fields
            fields.pop(0)
            name = fields.pop(0)
        numstat[name] = (added, removed)
    assert {
        f.path: ("-", "-") if f.binary else (str(f.added), str(f.removed)) for f in summary.files
    } == numstat


def test_fallback_on_a_corrupted_real_diff(changed_repo: tuple[Path, str, str]) -> None:
    repo, base, head = changed_repo
    text = git(repo, "diff", "-M", base, head)
    corrupted = text.replace("@@ -1,5 +1,6 @@", "@@ -1,5 +1,9 @@")
    assert corrupted != text

    summary = summarize_diff(corrupted)

    assert summary.parse_error is not None
    assert summary.files == EXPECTED


# -- gitops.summarize: counted first, listed within bounds ---------------------------------


def test_summarize_lists_the_files_of_a_real_diff(changed_repo: tuple[Path, str, str]) -> None:
    repo, base, head = changed_repo
    summary = gitops.summarize(repo, base, head)
    assert (summary.files, summary.unlisted) == (EXPECTED, 0)
    assert gitops.summarize(repo, head, head) == DiffSummary()


def test_summarize_counts_a_diff_of_too_many_files(
    changed_repo: tuple[Path, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, base, head = changed_repo
    monkeypatch.setattr(gitops, "MAX_FILES_LISTED", 5)
    assert gitops.summarize(repo, base, head) == DiffSummary(unlisted=15)  # renames count 2


def test_summarize_counts_a_diff_git_cannot_finish_within_its_bounds(
    changed_repo: tuple[Path, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, base, head = changed_repo
    counted = treecount.count_changed(repo, base, head, ["git"], gitops.git_env(), gitops.SUMMARY)
    monkeypatch.setattr(treecount, "count_changed", lambda *_args: counted)
    starved = bounded.Bounds(cpu_seconds=1, memory_bytes=1 * bounded.MB, wall_seconds=10)
    monkeypatch.setattr(gitops, "SUMMARY", starved)
    assert gitops.summarize(repo, base, head) == DiffSummary(unlisted=15)


def test_summarize_cuts_a_large_diff_and_counts_the_rest(
    changed_repo: tuple[Path, str, str],
) -> None:
    repo, base, head = changed_repo
    summary = gitops.summarize(repo, base, head, max_bytes=600)
    assert summary.truncated and 0 < len(summary.files) < 13
    assert summary.files_changed == 15  # counted from the trees: a rename counts 2
