"""Rank the attempts of one prompt on evidence: pure, shared by the App and `trimo run`.

The default order is verify passed, then fewest failing checks, then smallest diff, then
cost. Evidence first: a passing `verify:` is the project's own word that the change works,
and fewer failing checks is the next best sign. Among attempts equally good on evidence,
the smaller change is easier to review and less likely to carry surprises, and only then
does spend decide. An attempt that failed, timed out, crashed or changed nothing always
ranks below every attempt that finished with commits, whatever the order asked for; one
whose checks failed ends as a failure too, yet it is ranked on that evidence.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final, Literal, get_args

from pydantic import BaseModel, ConfigDict

from runner.job import Outcome

PickMode = Literal["manual", "auto"]
"""`auto`: the top attempt is kept when it passed verification; `manual`: a person picks."""
RankKey = Literal["verify", "failing_checks", "diff", "cost", "tokens", "duration"]
RANK_KEYS: Final[tuple[RankKey, ...]] = get_args(RankKey)
DEFAULT_RANK_BY: Final[tuple[RankKey, ...]] = ("verify", "failing_checks", "diff", "cost")
MAX_LAST_WORD: Final = 280
"""Characters of an attempt's last word shown in its row (hostile text, cut short)."""


class AttemptResult(BaseModel):
    """What one attempt's evidence was, as far as ranking and its table row need."""

    model_config = ConfigDict(frozen=True)

    number: int
    agent: str
    outcome: Outcome | None = None
    """None while it has not ended."""
    reason: str = ""
    verified: bool | None = None
    """Whether its `verify:` checks all passed on its head; None when none ran."""
    checks_passed: int = 0
    checks_failed: int = 0
    commits: int = 0
    files_changed: int = 0
    lines_changed: int = 0
    cost_usd: float | None = None
    tokens: int = 0
    seconds: float | None = None
    last_word: str = ""
    head_sha: str | None = None

    @property
    def finished_with_work(self) -> bool:
        """Ended on its own with commits, and either succeeded or has verify's evidence
        (a run whose checks failed ends as a failure): a candidate to keep."""
        if self.commits == 0:
            return False
        return self.outcome is Outcome.SUCCESS or (
            self.outcome is Outcome.FAILURE and self.verified is not None
        )

    @property
    def standing(self) -> str:
        """One word for the table: passed, failed (verify), done (no verify), or why not."""
        if self.outcome is None:
            return "running"
        if not self.finished_with_work:
            return "no change" if self.outcome is Outcome.SUCCESS else self.outcome.value
        if self.verified is None:
            return "done"
        return "passed" if self.verified else "failed"


def _verify_tier(result: AttemptResult) -> float:
    return 0 if result.verified else 1 if result.verified is None else 2


_KEYS: Final[dict[RankKey, Callable[[AttemptResult], float]]] = {
    "verify": _verify_tier,
    "failing_checks": lambda r: r.checks_failed,
    "diff": lambda r: r.lines_changed,
    "cost": lambda r: r.cost_usd if r.cost_usd is not None else float("inf"),
    "tokens": lambda r: r.tokens if r.tokens else float("inf"),
    "duration": lambda r: r.seconds if r.seconds is not None else float("inf"),
}


def parse_rank_by(words: Sequence[str]) -> tuple[RankKey, ...]:
    """`rank_by:` as given (each a known key, once); ValueError names the wrong one."""
    keys: list[RankKey] = []
    for word in words:
        key = next((k for k in RANK_KEYS if k == word.strip().lower()), None)
        if key is None:
            raise ValueError(f"unknown ranking key {word!r}: use " + ", ".join(RANK_KEYS))
        if key in keys:
            raise ValueError(f"ranking key {word!r} is given twice")
        keys.append(key)
    return tuple(keys)


def rank(
    results: Sequence[AttemptResult], rank_by: Sequence[RankKey] = DEFAULT_RANK_BY
) -> list[AttemptResult]:
    """Best first; ties go to the lower number. Attempts without work come after all the
    others, by number: their diff or cost says nothing about a result they did not give."""

    def key(result: AttemptResult) -> tuple[float, ...]:
        if not result.finished_with_work:
            return (1, result.number)
        agent_failed = 0 if result.outcome is Outcome.SUCCESS else 1
        return (0, *(_KEYS[name](result) for name in rank_by), agent_failed, result.number)

    return sorted(results, key=key)


def auto_pick(ranked: Sequence[AttemptResult]) -> AttemptResult | None:
    """`pick: auto`: the top attempt, only when it succeeded and passed verification."""
    top = ranked[0] if ranked else None
    if top is None or top.outcome is not Outcome.SUCCESS or not top.commits:
        return None
    return top if top.verified else None


def cut_short(text: str, limit: int = MAX_LAST_WORD) -> str:
    """`text` on one line, at most `limit` characters (an ellipsis says it was cut)."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"
