"""Secret scrubbing: every text that leaves the runner loses the secret values of its run.

Each secret is masked in the forms it usually leaks in: as is, URL-encoded (a clone URL's
credentials), and base64-encoded, alone or as git's basic-auth pair
`x-access-token:<secret>`. Secrets shorter than `MIN_SECRET_LENGTH` characters, or made
only of whitespace, are ignored: masking them would mangle ordinary text, and no real
credential is that short.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MIN_SECRET_LENGTH = 4
_PERCENT_ESCAPE = re.compile(r"%[0-9A-F]{2}")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def secret_forms(secret: str) -> set[str]:
    """The spellings of `secret` that are masked."""
    encoded = quote(secret, safe="")
    forms = {
        secret,
        encoded,
        _PERCENT_ESCAPE.sub(lambda m: m[0].lower(), encoded),
        quote_plus(secret, safe=""),
    }
    for b64 in (_b64(secret), _b64(f"x-access-token:{secret}")):
        forms |= {b64, b64.rstrip("=")}
    return forms


class Scrubber:
    """Masks a run's secrets in text and in JSON-like values."""

    def __init__(self, secrets: Iterable[str], mask: str = "***") -> None:
        self.mask = mask
        self._forms: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.add(*secrets)

    def add(self, *secrets: str) -> None:
        """Scrub these too from now on (a secret that appears mid-run, like a proxy password)."""
        for secret in secrets:
            if len(secret) >= MIN_SECRET_LENGTH and secret.strip():
                self._forms |= secret_forms(secret)
        # Longest first: at any position the longest secret form wins.
        ordered = sorted(self._forms, key=lambda form: (-len(form), form))
        alternation = "|".join(re.escape(form) for form in ordered)
        self._pattern = re.compile(alternation) if ordered else None

    def scrub(self, text: str) -> str:
        """`text` with every occurrence of a secret form replaced by the mask."""
        if self._pattern is None:
            return text
        spans: list[list[int]] = []
        match = self._pattern.search(text)
        while match is not None:
            start, end = match.span()
            if spans and start <= spans[-1][1]:
                spans[-1][1] = max(spans[-1][1], end)
            else:
                spans.append([start, end])
            # Search again from the next character, not the match's end, so that a secret
            # overlapping this one is found and masked whole too.
            match = self._pattern.search(text, start + 1)
        if not spans:
            return text
        parts: list[str] = []
        last = 0
        for start, end in spans:
            parts += (text[last:start], self.mask)
            last = end
        parts.append(text[last:])
        return "".join(parts)

    def scrub_json(self, value: object) -> object:
        """A copy of `value` with every string in it scrubbed, dict keys included."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {self.scrub_json(k): self.scrub_json(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.scrub_json(item) for item in value]
        if isinstance(value, tuple):
            return tuple(self.scrub_json(item) for item in value)
        return value
