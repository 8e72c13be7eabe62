"""A set of attempts as people read it: its ranked table on the thread and the dashboard.

Pure: rows from the pipeline as saved, text from `templates/github/attempts.md.j2`.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.conversation.naming import inline_code
from app.reporting.runview import duration, money
from app.runs.pipelines import AttemptSet, Pipeline, PipelineRun
from runner.ranking import MAX_LAST_WORD, AttemptResult, cut_short, rank
from runner.templating import render

STANDING_MARKS = {
    "passed": "✅ passed",
    "failed": "❌ checks failed",
    "done": "☑️ done (no checks)",
    "running": "⏳ running",
    "no change": "➖ no change",
    "failure": "❌ agent failed",
    "timed_out": "⏱️ timed out",
    "cancelled": "⏹️ stopped",
    "error": "⚠️ could not run",
}


@dataclass(frozen=True)
class Row:
    """One attempt in its set's table, in ranked order (`place` 0 until all have ended)."""

    place: int
    number: int
    agent: str
    standing: str
    checks: str
    changed: str
    cost: str
    tokens: str
    took: str
    last_word: str
    branch: str
    run_id: str
    result: AttemptResult


def rows(pipeline: Pipeline, attempt_set: AttemptSet) -> list[Row]:
    """The set's attempts, best first once all have ended (by number while any runs)."""
    runs = {run.attempt: run for run in pipeline.attempts_of(attempt_set)}
    results = [run.result() for run in runs.values()]
    ended = all(result.outcome is not None for result in results)
    ordered = rank(results, attempt_set.rank_by) if ended else results
    return [
        _row(place if ended else 0, result, runs[result.number], pipeline)
        for place, result in enumerate(ordered, 1)
    ]


def all_ended(pipeline: Pipeline, attempt_set: AttemptSet) -> bool:
    return all(run.status == "finished" for run in pipeline.attempts_of(attempt_set))


def _row(place: int, result: AttemptResult, run: PipelineRun, pipeline: Pipeline) -> Row:
    checks = result.checks_passed + result.checks_failed
    return Row(
        place=place,
        number=result.number,
        agent=result.agent,
        standing=STANDING_MARKS.get(result.standing, result.standing),
        checks=f"{result.checks_passed}/{checks}" if checks else "–",
        changed=(
            f"{_count(result.files_changed, 'file')}, {_count(result.lines_changed, 'line')}"
            if result.commits
            else "–"
        ),
        cost=money(result.cost_usd) if result.cost_usd is not None else "–",
        tokens=_tokens(result.tokens),
        took=duration(result.seconds) if result.seconds is not None else "–",
        last_word=cut_short(result.last_word or result.reason, MAX_LAST_WORD),
        branch=run.branch or pipeline.branch,
        run_id=run.run_id,
        result=result,
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def ranking_order(attempt_set: AttemptSet) -> str:
    """`verify, failing checks, diff, cost`: the set's order, for people."""
    return ", ".join(key.replace("_", " ") for key in attempt_set.rank_by)


def _tokens(count: int) -> str:
    if not count:
        return "–"
    return f"{count / 1000:.1f}k" if count >= 1000 else str(count)


def _cell(text: str, limit: int = 60) -> str:
    """Literal text in one table cell (a `|` would end the cell, even in code)."""
    return inline_code(text, limit).replace("|", "\\|") if text.strip() else "–"


def total_cost(table: list[Row]) -> str:
    costs = [row.result.cost_usd for row in table if row.result.cost_usd is not None]
    return money(sum(costs)) if costs else "–"


def comment(
    pipeline: Pipeline,
    attempt_set: AttemptSet,
    *,
    keep_days: int,
    dashboard_url: str = "",
    pull: int | None = None,
) -> str:
    """The thread comment of a set: its table (ranked once all have ended) and the pick."""
    table = rows(pipeline, attempt_set)
    first = pipeline.find(attempt_set.runs[0]) if attempt_set.runs else None
    base = dashboard_url.rstrip("/")
    return render(
        "github/attempts.md.j2",
        count=len(table),
        requested_by=first.requested_by if first else "",
        prompt=_cell((first.prompt.strip().splitlines() or [""])[0] if first else "", 100),
        ended=all_ended(pipeline, attempt_set),
        rows=[
            {
                "place": row.place,
                "number": row.number,
                "agent": _cell(row.agent, 32),
                "standing": row.standing,
                "checks": row.checks,
                "changed": row.changed,
                "cost": row.cost,
                "tokens": row.tokens,
                "took": row.took,
                "last_word": _cell(row.last_word, MAX_LAST_WORD),
                "branch": _cell(row.branch, 120),
            }
            for row in table
        ],
        total_cost=total_cost(table),
        rank_by=ranking_order(attempt_set),
        pick=attempt_set.pick,
        picked=attempt_set.picked,
        picked_by=attempt_set.picked_by,
        pick_note=attempt_set.pick_note,
        branch=_cell(pipeline.branch, 120),
        pull=pull,
        keep_days=keep_days,
        cleaned=attempt_set.cleaned,
        dashboard=f"{base}/pipelines/{pipeline.id}" if base else "",
    )
