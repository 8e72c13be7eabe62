"""No tracked file names a real package or image registry: examples use hosts under
example.com, and tests that need an outside host read it from the machine's pip or npm
configuration at run time (tests/outside.py)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.outside import registry_host

ROOT = Path(__file__).resolve().parents[1]
PUBLIC_REGISTRIES = [
    "pypi.org", "files.pythonhosted.org", "registry.npmjs.org", "registry.yarnpkg.com",
    "ghcr.io", "registry-1.docker.io", "index.docker.io", "hub.docker.com", "quay.io",
    "gcr.io", "crates.io", "static.rust-lang.org", "rubygems.org", "proxy.golang.org",
    "deb.debian.org", "security.debian.org", "archive.ubuntu.com", "dl-cdn.alpinelinux.org",
]  # fmt: skip
"""Registries a file could name by habit (the apt package `docker.io` is not a host)."""


def tracked_texts() -> dict[str, str]:
    """Each tracked text file but this one, by its path."""
    paths = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    texts = {}
    for raw in filter(None, paths):
        path = ROOT / raw.decode()
        if path == Path(__file__).resolve() or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" not in data:
            texts[raw.decode()] = data.decode(errors="replace")
    return texts


def test_no_tracked_file_names_a_real_registry() -> None:
    hosts = [*PUBLIC_REGISTRIES, registry_host()]
    pattern = re.compile(
        r"(?<![\w.-])(?:[\w-]+\.)*(?:" + "|".join(map(re.escape, hosts)) + r")(?![\w-])",
        re.IGNORECASE,
    )
    texts = tracked_texts()
    assert len(texts) > 100, "git ls-files found too few files to be this checkout"
    found = [
        f"{path}:{text.count(chr(10), 0, m.start()) + 1}: {m.group()}"
        for path, text in texts.items()
        for m in pattern.finditer(text)
    ]
    assert not found, "\n".join(found)
