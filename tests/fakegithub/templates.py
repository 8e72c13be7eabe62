"""GitHub's own response examples (from the corpora), loaded and re-pointed at the stand-in."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def corpora_dir() -> Path:
    here = Path(__file__).resolve().parents[3] / "shared" / "corpora"
    if here.is_dir():
        return here
    return Path(os.environ.get("TRIMO_CORPORA", "/work/shared/corpora"))


@functools.cache
def _raw(name: str) -> str:
    return (corpora_dir() / "api" / "openapi" / f"{name}.json").read_text()


def example(name: str) -> Any:
    """A fresh copy of the OpenAPI example `api/openapi/<name>.json`."""
    return json.loads(_raw(name))


def rewrite(obj: Any, pairs: Sequence[tuple[str, str]]) -> Any:
    """`obj` with every (old, new) substring replacement applied, in order, to its strings."""
    if isinstance(obj, str):
        for old, new in pairs:
            obj = obj.replace(old, new)
        return obj
    if isinstance(obj, list):
        return [rewrite(item, pairs) for item in obj]
    if isinstance(obj, dict):
        return {key: rewrite(value, pairs) for key, value in obj.items()}
    return obj


def host_pairs(base: str) -> list[tuple[str, str]]:
    """Replacements that send github.com's addresses to the stand-in at `base`."""
    return [
        ("https://api.github.com", base),
        ("https://uploads.github.com", base),
        ("https://github.com", base),
    ]


def status_of(name: str) -> int:
    """The status an example answers with: `pulls__create.response.201.default` → 201."""
    parts = name.split(".")
    return int(parts[parts.index("response") + 1])


def recorded(fixture: str, index: int = 0) -> tuple[Any, int]:
    """(body, status) of exchange `index` in `api/octokit-fixtures/<fixture>...json`.

    These are answers real GitHub gave, recorded by octokit.
    """
    path = corpora_dir() / "api" / "octokit-fixtures" / f"{fixture}.normalized-fixture.json"
    exchange = json.loads(path.read_text())[index]
    return exchange["response"], int(exchange["status"])
