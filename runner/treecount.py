"""How many files two commits differ by, counted from their trees.

`git diff` expands every path before it prints the first, so a few objects that name
ten million files (one subtree repeated) cost it gigabytes. Here each tree is read once
(`git cat-file --batch`, within bounds) and what a subtree holds is remembered by its id:
the cost follows the distinct trees, not the paths. Counting stops at a budget of tree
bytes, depth and time; the count is then a lower bound.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from runner import bounded

TREE_MODE = b"40000"


@dataclass(frozen=True)
class Count:
    files: int
    complete: bool
    """False when the budget ran out: at least `files` files differ."""


@dataclass(frozen=True)
class Budget:
    """What counting may read: the runner's memory follows the tree bytes and trees."""

    tree_bytes: int = 8 * 1024 * 1024
    trees: int = 50_000
    depth: int = 200
    seconds: float = 30.0


class _OutOfBudget(Exception):
    pass


Entry = tuple[bytes, str]
"""A tree entry: its mode and object id."""


class _Trees:
    """Trees read from one `cat-file --batch`, within the budget."""

    def __init__(self, stdin: IO[bytes], stdout: IO[bytes], budget: Budget) -> None:
        self._in, self._out = stdin, stdout
        self._bytes_left, self._trees_left = budget.tree_bytes, budget.trees
        self._deadline = time.monotonic() + budget.seconds

    def read(self, name: str) -> dict[bytes, Entry]:
        """The entries of tree `name` (an id, or `<commit>^{tree}`)."""
        self._trees_left -= 1
        if self._trees_left < 0 or time.monotonic() > self._deadline:
            raise _OutOfBudget
        self._in.write(name.encode() + b"\n")
        self._in.flush()
        header = self._out.readline(200).split()
        if len(header) != 3 or header[1] != b"tree" or not header[2].isdigit():
            raise _OutOfBudget  # missing, not a tree, or cat-file stopped (killed)
        size = int(header[2])
        self._bytes_left -= size
        if self._bytes_left < 0:
            raise _OutOfBudget
        data = self._out.read(size + 1)
        if len(data) != size + 1:
            raise _OutOfBudget
        return _parse(data[:size])


def _parse(data: bytes) -> dict[bytes, Entry]:
    entries: dict[bytes, Entry] = {}
    pos = 0
    while pos < len(data):
        space = data.index(b" ", pos)
        nul = data.index(b"\0", space)
        mode, name = data[pos:space], data[space + 1 : nul]
        entries[name] = (mode, data[nul + 1 : nul + 21].hex())
        pos = nul + 21
    return entries


class _Counter:
    def __init__(self, read: Callable[[str], dict[bytes, Entry]], depth: int) -> None:
        self._read = read
        self._depth = depth
        self._files: dict[str, int] = {}
        self._changed: dict[tuple[str, str], int] = {}
        self.found = 0
        """Files found so far: a lower bound if counting stops early."""

    def files(self, tree: str, depth: int) -> int:
        """How many files `tree` holds."""
        if tree in self._files:
            self.found += self._files[tree]
            return self._files[tree]
        if depth > self._depth:
            raise _OutOfBudget
        total = sum(self._entry(entry, depth) for entry in self._read(tree).values())
        self._files[tree] = total
        return total

    def changed(self, old: str, new: str, depth: int) -> int:
        """How many files differ between trees `old` and `new`."""
        if (old, new) in self._changed:
            self.found += self._changed[old, new]
            return self._changed[old, new]
        if depth > self._depth:
            raise _OutOfBudget
        before, after = self._read(old), self._read(new)
        total = 0
        for name in before.keys() | after.keys():
            a, b = before.get(name), after.get(name)
            if a == b:
                continue
            if a is None or b is None:
                only = a or b
                assert only is not None
                total += self._entry(only, depth)
            elif a[0] == TREE_MODE and b[0] == TREE_MODE:
                total += self.changed(a[1], b[1], depth + 1)
            else:  # a file changed, or a file and a directory swapped places
                total += sum(self._entry(e, depth) for e in (a, b) if e[0] == TREE_MODE)
                self.found += 1
                total += 1
        self._changed[old, new] = total
        return total

    def _entry(self, entry: Entry, depth: int) -> int:
        if entry[0] == TREE_MODE:
            return self.files(entry[1], depth + 1)
        self.found += 1
        return 1


def count_changed(
    repo: Path,
    base: str,
    head: str,
    git: Sequence[str],
    env: Mapping[str, str],
    bounds: bounded.Bounds,
    budget: Budget = Budget(),
) -> Count:
    """How many files differ between commits `base` and `head` of `repo`, read with the
    git command `git`; never raises."""
    with bounded.popen(
        [*git, "cat-file", "--batch"],
        bounds,
        cwd=repo,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        counter = _Counter(_Trees(proc.stdin, proc.stdout, budget).read, budget.depth)
        try:
            counter.changed(f"{base}^{{tree}}", f"{head}^{{tree}}", 0)
            return Count(counter.found, complete=True)
        except (_OutOfBudget, OSError, ValueError):
            return Count(counter.found, complete=False)
