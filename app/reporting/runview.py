"""What GitHub shows of a run, accumulated from its events. Pure: no I/O here.

The reporter folds each run event into a `RunView` (kept in Redis between
events) and renders it with the templates in `templates/github/`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from app.conversation.naming import inline_code
from app.conversation.thread import fenced
from app.runs.pipelines import Pipeline, PipelineRun
from runner.contract import RunMode
from runner.diffsummary import DiffSummary
from runner.events import shorten
from runner.job import Kept, Outcome, PushRefused, RunEvent, RunFinished, VerifyReport
from runner.printable import printable
from runner.templating import render

RECENT_TOOLS = 5
KEPT_SHOWN = 5
BLOCKED_HOSTS_SHOWN = 10
CHECK_TAILS_CHARS = 20_000
"""Of the failing checks' output, the most a check-run summary shows (shared among them)."""
MAX_PLAN_SHOWN = 60_000
"""Of a plan, at most this much goes in a comment (65,536) or a check-run summary (65,535)."""
_MENTION = re.compile(r"@(?=[A-Za-z0-9_-])")

CheckConclusion = Literal["success", "failure", "neutral", "cancelled", "timed_out"]

CONCLUSIONS: dict[Outcome, CheckConclusion] = {
    Outcome.SUCCESS: "success",
    Outcome.FAILURE: "failure",
    Outcome.TIMED_OUT: "timed_out",
    Outcome.CANCELLED: "cancelled",
    Outcome.ERROR: "failure",
}

OUTCOME_WORDS: dict[Outcome, tuple[str, str]] = {
    Outcome.SUCCESS: ("✅", "finished"),
    Outcome.FAILURE: ("❌", "failed"),
    Outcome.TIMED_OUT: ("⏱️", "timed out"),
    Outcome.CANCELLED: ("⏹️", "was stopped"),
    Outcome.ERROR: ("⚠️", "could not run"),
}


class RunView(BaseModel):
    run_id: str
    agent: str = ""
    mode: RunMode = "code"
    runner: str = ""
    image: str = ""
    started_at: datetime | None = None
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    tool_calls: int = 0
    recent_tools: list[str] = Field(default_factory=list)
    last_message: str = ""
    pushed_commits: int = 0
    head_sha: str | None = None
    base_sha: str | None = None
    salvage_ref: str | None = None
    refused: PushRefused | None = None
    blocked_hosts: dict[str, int] = Field(default_factory=dict)
    """Host names the egress proxy refused, with how often."""
    kept: list[Kept] = Field(default_factory=list)
    """What became of commits earlier runs kept, as this run started."""
    verifying: list[str] = Field(default_factory=list)
    """The checks of `verify:` running now, once the agent has ended."""
    verify_sha: str | None = None
    finished: RunFinished | None = None
    events: int = 0

    def apply(self, event: RunEvent) -> RunView:
        """This view with `event` folded in."""
        view = self.model_copy(deep=True)
        view.events += 1
        match event.type:
            case "started":
                view.agent, view.runner, view.image = event.agent, event.runner, event.image
                view.mode = event.mode
                view.started_at, view.base_sha = event.at, event.base_sha
            case "tool_call":
                view.tool_calls += 1
                label = f"{event.name} {shorten(event.summary, 80)}".strip()
                view.recent_tools = [*view.recent_tools, label][-RECENT_TOOLS:]
            case "message":
                view.last_message = shorten(event.text, 200)
            case "usage":
                view.model = event.model or view.model
                view.input_tokens += event.input_tokens
                view.output_tokens += event.output_tokens
                if event.cost_usd is not None:
                    view.cost_usd = (view.cost_usd or 0) + event.cost_usd
            case "pushed":
                view.pushed_commits += event.commits
                view.head_sha = event.sha
            case "salvaged":
                view.salvage_ref = event.ref
            case "push_refused":
                view.refused = event
            case "egress_blocked":
                for host, count in event.hosts.items():
                    view.blocked_hosts[host] = view.blocked_hosts.get(host, 0) + count
            case "kept":
                view.kept = [*view.kept, event][:KEPT_SHOWN]
            case "verifying":
                view.verifying, view.verify_sha = list(event.checks), event.sha
            case "finished":
                view.finished = event
                view.refused = event.refused or view.refused
                if event.usage is not None:  # the runner's sum: whole, however much was shown
                    view.model = event.usage.model or view.model
                    view.input_tokens = event.usage.input_tokens
                    view.output_tokens = event.usage.output_tokens
                    view.cost_usd = event.usage.cost_usd
        return view

    def elapsed_seconds(self, now: datetime) -> float:
        end = self.finished.at if self.finished else now
        return max(0.0, (end - self.started_at).total_seconds()) if self.started_at else 0.0


def conclusion_of(finished: RunFinished, mode: RunMode = "code") -> CheckConclusion:
    """A discovery run that answered changed nothing: `neutral`, neither green nor red."""
    if mode == "discover" and finished.outcome is Outcome.SUCCESS:
        return "neutral"
    return CONCLUSIONS[finished.outcome]


def quoted_plan(plan: str, limit: int = MAX_PLAN_SHOWN) -> str:
    """An agent's plan as a Markdown block quote it cannot leave: no control characters, no
    @mentions, no HTML comments (Trimo's markers), every line quoted, at most `limit`."""
    text = _MENTION.sub("@\u200b", printable(plan).strip())
    text = text.replace("<!--", "&lt;!--").replace("-->", "--&gt;")
    lines = [f"> {line}".rstrip() for line in text.splitlines() or [""]]
    kept, size = [], 0
    for line in lines:
        if size + len(line) + 1 > limit:
            kept.append(">\n> *…the rest of the plan is cut: it is longer than GitHub shows.*")
            break
        kept.append(line)
        size += len(line) + 1
    return "\n".join(kept)


def duration(seconds: float) -> str:
    """`42s`, `3m 05s`, `1h 02m`: how long, for people."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def money(cost: float | None) -> str:
    return "" if cost is None else f"${cost:.2f}" if cost >= 0.01 else f"${cost:.4f}"


# --- rendering -------------------------------------------------------------------------


def _code(text: str, limit: int = 60) -> str:
    return inline_code(text, limit).replace("|", "\\|")


def _tokens(view: RunView) -> str:
    if not (view.input_tokens or view.output_tokens):
        return ""
    return f"{view.input_tokens:,} in / {view.output_tokens:,} out"


def _common(view: RunView, branch: str, now: datetime) -> dict[str, Any]:
    return {
        "agent": _code(view.agent or "agent"),
        "model": _code(view.model) if view.model else "",
        "runner": _code(view.runner or "?"),
        "elapsed": duration(view.elapsed_seconds(now)),
        "tokens": _tokens(view),
        "cost": money(view.cost_usd),
        "tool_calls": view.tool_calls,
        "pushed": view.pushed_commits,
        "branch": _code(branch, 100),
        "discover": view.mode == "discover",
        "salvage": _code(view.salvage_ref, 100) if view.salvage_ref else "",
        "refused": _refused(view.refused),
        "kept": [_kept(kept) for kept in view.kept],
        "blocked": _blocked(view.blocked_hosts),
        "blocked_more": max(0, len(view.blocked_hosts) - BLOCKED_HOSTS_SHOWN),
        "verifying": ", ".join(_code(name) for name in view.verifying),
        "verify_sha": _code(view.verify_sha[:7]) if view.verify_sha else "",
    }


def checks_shown(report: VerifyReport | None, tails: bool = True) -> dict[str, Any] | None:
    """The checks of `verify:` for `_verify.md.j2`: a row each, and with `tails` the end of
    each failing check's output in a block it cannot leave (sharing `CHECK_TAILS_CHARS`)."""
    if report is None or not report.checks:
        return None
    failing = [check for check in report.checks if not check.passed and check.log_tail]
    share = CHECK_TAILS_CHARS // max(1, len(failing))
    rows = [
        {
            "icon": "✅" if check.passed else "❌",
            "name": _code(check.name),
            "took": duration(check.seconds) if check.seconds else "",
            "result": _check_result(check.passed, check.exit_code, check.problem),
        }
        for check in report.checks
    ]
    return {
        "sha": _code(report.sha[:7]),
        "passed": report.passed,
        "failing": ", ".join(_code(name) for name in report.failing),
        "rows": rows,
        "tails": [
            {"name": _code(check.name), "tail": fenced(_tail(check.log_tail, share), "text")}
            for check in failing
        ]
        if tails
        else [],
    }


def _check_result(passed: bool, exit_code: int | None, problem: str) -> str:
    if passed:
        return "passed"
    if problem:
        return _code(problem, 200)
    return f"exit code {exit_code}" if exit_code is not None else "failed"


def _tail(text: str, limit: int) -> str:
    text = printable(text)
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


def _blocked(hosts: dict[str, int]) -> list[dict[str, Any]]:
    """The hosts the network refused, most refused first, for `_blocked_hosts.md.j2`."""
    ranked = sorted(hosts.items(), key=lambda item: (-item[1], item[0]))
    return [
        {"host": inline_code(host, 100), "count": count}
        for host, count in ranked[:BLOCKED_HOSTS_SHOWN]
    ]


def _refused(refused: PushRefused | None) -> dict[str, str] | None:
    """What GitHub refused to take, for people: the commit, its files, GitHub's reason."""
    if refused is None:
        return None
    reason = (refused.reason.strip().splitlines() or ["no reason given"])[0]
    return {
        "sha": _code(refused.sha[:7]),
        "paths": ", ".join(_code(path, 90) for path in refused.paths[:5]),
        "reason": _code(reason, 200),
    }


def _kept(kept: Kept) -> dict[str, Any]:
    """What became of kept commits, for `_kept.md.j2`: values escaped, `by` in words."""
    return {
        "action": kept.action,
        "why": kept.why,
        "by": f"run {_code(kept.kept_by, 100)}" if kept.kept_by else "an earlier run",
        "commits": kept.commits,
        "sha": _code(kept.sha[:7]),
        "branch": _code(kept.branch, 200),
        "entry": _code(kept.entry),
        "ref": _code(kept.ref, 200),
        **{
            name: _code(text, 300) if text else ""
            for name, text in (
                ("problem", kept.problem),
                ("refused", kept.refused),
                ("unstored", kept.unstored),
            )
        },
    }


def _diff(diff: DiffSummary, limit: int = 25) -> dict[str, Any]:
    files = [
        {
            "name": _code(f"{f.old_path} → {f.path}" if f.old_path else f.path, 90),
            "added": "binary" if f.binary else f.added,
            "removed": "" if f.binary else f.removed,
        }
        for f in diff.files[:limit]
    ]
    return {
        "files": files,
        "more": max(0, len(diff.files) - limit) + diff.unlisted,
        "total_files": diff.files_changed,
        "unlisted": render("diff_unlisted.txt.j2", diff=diff).strip() if diff.unlisted else "",
        "added": diff.added,
        "removed": diff.removed,
    }


def _finished(view: RunView, branch: str, commit_limit: int = 15) -> dict[str, Any]:
    finished = view.finished
    assert finished is not None
    icon, verb = OUTCOME_WORDS[finished.outcome]
    commits = [
        {"sha": _code(c.sha[:7]), "subject": _code(c.subject, 72)}
        for c in finished.commits[-commit_limit:]
    ]
    return {
        **_common(view, branch, finished.at),
        **_diff(finished.diff),
        "icon": icon,
        "verb": verb,
        "success": finished.outcome is Outcome.SUCCESS,
        "reason": _code(finished.reason, 300) if finished.reason else "",
        "not_kept": not_kept(finished.lines_not_kept) if finished.lines_not_kept else "",
        "commits": commits,
        "more_commits": max(0, len(finished.commits) - commit_limit),
        "salvage": _code(finished.salvage_ref, 100) if finished.salvage_ref else "",
        "checks": checks_shown(finished.verify),
    }


def not_kept(lines: int) -> str:
    """How a run's log and summary say that some of its output lines were not stored."""
    return f"{lines:,} {'line' if lines == 1 else 'lines'} not kept"


def title_and_summary(text: str) -> tuple[str, str]:
    """A rendered check-run text: its first line is the title, the rest the summary."""
    title, _, summary = text.strip().partition("\n")
    return title.strip(), summary.strip()


def check_running(view: RunView, branch: str, now: datetime) -> tuple[str, str]:
    recent = [_code(tool, 100) for tool in view.recent_tools]
    return title_and_summary(
        render("github/check_running.md.j2", recent_tools=recent, **_common(view, branch, now))
    )


def check_finished(view: RunView, branch: str, mode: RunMode = "code") -> tuple[str, str]:
    if mode == "discover":
        return title_and_summary(
            render("github/check_discovered.md.j2", **_discovered(view, branch))
        )
    return title_and_summary(render("github/check_finished.md.j2", **_finished(view, branch)))


def _discovered(view: RunView, branch: str) -> dict[str, Any]:
    finished = view.finished
    assert finished is not None
    return {
        **_finished(view, branch),
        "plan": quoted_plan(finished.plan) if finished.plan.strip() else "",
        "follow_up": FOLLOW_UP,
    }


IMPLEMENT_PLAN = "implement the plan above"
"""The prompt that carries out a discovery run's plan (the agent is given that plan)."""
FOLLOW_UP = f"/trimo run {IMPLEMENT_PLAN}"
"""The command a plan comment offers, to carry the plan out."""


def plan_comment(view: RunView, pipeline: Pipeline, run: PipelineRun, check_url: str) -> str:
    """The comment with a discovery run's findings and plan, and how to carry it out."""
    return render(
        "github/plan.md.j2",
        run_id=_code(view.run_id, 100),
        check_url=check_url,
        user=run.requested_by,
        automatic=_code(run.ci_sha[:7]) if run.ci_sha else "",
        **_discovered(view, pipeline.branch),
    )


def progress_running(view: RunView, branch: str, check_url: str) -> str:
    return render(
        "github/progress_running.md.j2",
        run_id=_code(view.run_id, 100),
        check_url=check_url,
        **_common(view, branch, view.started_at or datetime.now(UTC)),
    )


def progress_finished(
    view: RunView,
    branch: str,
    check_url: str,
    pull: int | None,
    pull_problem: str = "",
    mode: RunMode = "code",
) -> str:
    """The progress comment's last word; `pull_problem`: why GitHub would not open the PR."""
    if mode == "discover":
        return render(
            "github/progress_discovered.md.j2",
            run_id=_code(view.run_id, 100),
            check_url=check_url,
            **_discovered(view, branch),
        )
    words = _finished(view, branch)
    words["checks"] = checks_shown(view.finished.verify if view.finished else None, tails=False)
    return render(
        "github/progress_finished.md.j2",
        run_id=_code(view.run_id, 100),
        check_url=check_url,
        pull=pull,
        pull_problem=_code(pull_problem, 200) if pull_problem else "",
        **words,
    )


def pull_title(issue_title: str) -> str:
    title = " ".join(issue_title.split())
    return (title[:240] + "…") if len(title) > 240 else title or "Trimo"


def pull_body(pipeline: Pipeline, closes: bool) -> str:
    runs = [
        {
            "run_id": _code(run.run_id, 40),
            "prompt": _code((run.prompt.strip().splitlines() or [""])[0], 60),
            "agent": _code(run.agent),
            "outcome": (run.outcome.value.replace("_", " ") if run.outcome else run.status),
            "commits": len(run.commits),
            "attempts": _attempts_link(pipeline, run),
        }
        for run in pipeline.runs
        if run.started and (not run.attempt or pipeline.is_picked(run))
    ]
    return render(
        "github/pull_body.md.j2",
        closes=closes,
        number=pipeline.number,
        branch=_code(pipeline.branch, 100),
        runs=runs,
    )


def _attempts_link(pipeline: Pipeline, run: PipelineRun) -> str:
    """For a kept attempt: `attempt #2 of 3, [ranked here](…)`, linking its set's table."""
    attempt_set = pipeline.attempt_set(run.set_id) if run.attempt else None
    if attempt_set is None:
        return ""
    text = f"attempt #{run.attempt} of {len(attempt_set.runs)}"
    if attempt_set.comment_id is None or not run.thread:
        return text
    where = f"{html_url(pipeline.clone_url)}/issues/{run.thread}"
    return f"{text}, [ranked here]({where}#issuecomment-{attempt_set.comment_id})"


def html_url(clone_url: str) -> str:
    """The repository's web address from its clone URL (github.com, GHES or the stand-in)."""
    return clone_url.removesuffix(".git")
