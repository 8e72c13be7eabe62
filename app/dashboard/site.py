"""The dashboard's pages, live streams and actions, served by `trimo serve` at `/`.

Every page starts from the signed-in viewer (`auth.current_viewer`), and shows only the
repositories they see. Actions are POSTs checked for their CSRF token; they are handed to
the App worker as `trimo_dashboard` deliveries (see `app.dashboard.requests`), so the
runs service handles them exactly as it handles comment commands.

Stable hooks for browser tests (documented in the templates): `#col-<column>` columns,
`#card-<pipeline id>` cards (`data-column`), `#log` with `.log-line` lines (`data-id`),
`#kept` with `.kept` sets (`data-entry`), `.attempts` sets with `#pick-<n>` buttons, and
buttons `#stop`, `#retry`, `#follow-up` and `#new-pipeline`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import quote

from githubkit.exception import RequestError, RequestFailed
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from app.conversation.policy import role_allows
from app.dashboard import attempts, data, kept, spenddata, spendview
from app.dashboard.auth import Viewer, checked_form, csrf_token, current_viewer
from app.dashboard.board import (
    TAB_STATES,
    Filters,
    build_board,
    card_of,
    column_of,
    matches,
    place,
    run_column,
    state_words,
)
from app.dashboard.diffs import DiffPage, load_diff
from app.dashboard.live import BoardFeed, Listener, Overflow, PipelineUpdate, RunFeeds
from app.dashboard.logview import log_line, plain_text
from app.dashboard.pages import render, render_card, stream_time
from app.dashboard.requests import (
    DASHBOARD_EVENT,
    FormError,
    parse_follow_up,
    parse_line_comment,
    parse_new_pipeline,
    parse_pick,
)
from app.edge.web import RedisHandle, enqueue_delivery
from app.github.client import GitHubApp, UnexpectedAnswer
from app.github.installations import installation_for_repo
from app.reporting.channels.pullrequest import pull_of_pipeline, pull_title_of
from app.reporting.runview import IMPLEMENT_PLAN, html_url
from app.runs import previews
from app.runs.pipelines import Pipeline, PipelineRun, Pipelines
from app.runs.summary import summarise
from app.settings import AppSettings, SettingsError
from runner import __version__
from runner.contract import AGENTS, is_valid_id
from runner.job import Outcome

log = logging.getLogger("trimo.dashboard")
T = TypeVar("T")

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
KEEPALIVE_SECONDS: Final = 15.0
FLEET_LOOK_SECONDS: Final = 0.5
BRANCHES_SECONDS: Final = 60.0
BRANCHES_CACHED: Final = 1000
LEAST_ROLE_TO_ACT: Final = "write"
ASKED: Final = ("stop", "retry", "run", "implement", "preview", "preview_stop", "pick")
"""Actions the pipeline page thanks people for after they asked."""
"""No repository config asks for less than this; the App worker checks the config's own."""


def _now() -> datetime:
    return datetime.now(UTC)


_LINE_BREAK: Final = re.compile(r"\r\n|\r|\n")


def sse(event: str, payload: str, event_id: str | None = None) -> str:
    """One server-sent event; `payload` may span lines (a browser ends a line at CR, LF or
    CRLF alike: each is a line here, so no text in it starts a field or an event)."""
    head = f"id: {event_id}\n" if event_id else ""
    body = "".join(f"data: {line}\n" for line in _LINE_BREAK.split(payload))
    return f"{head}event: {event}\n{body}\n"


def may_act(viewer: Viewer, repo: str) -> bool:
    return role_allows(viewer.role(repo), LEAST_ROLE_TO_ACT)


class Dashboard:
    """The dashboard's routes, bound to the App's settings and Redis."""

    def __init__(self, settings: AppSettings, redis: RedisHandle) -> None:
        self.settings = settings
        self.redis = redis
        self.board_feed = BoardFeed(self._redis)
        self.run_feeds = RunFeeds(self._redis)
        self.summaries = data.SummaryCache()
        self.usage = data.UsageCache()
        self.spend = spenddata.SpendCache()
        self._github: GitHubApp | None = None
        self._branches: dict[str, tuple[float, list[str]]] = {}
        """Repository (lowercased) → (until when, its branches)."""

    async def _redis(self) -> Any:
        return await self.redis.get()

    async def _pipelines(self) -> Pipelines:
        return Pipelines(await self.redis.get())

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/", self.board),
            Route("/events/board", self.board_events),
            Route("/pipelines/new", self.new_pipeline_page),
            Route("/pipelines/new", self.new_pipeline, methods=["POST"]),
            Route("/started/{delivery_id}", self.started),
            Route("/branches", self.branches),
            Route("/pipelines/{pipeline_id}", self.pipeline_page),
            Route("/events/pipelines/{pipeline_id}", self.pipeline_events),
            Route("/pipelines/{pipeline_id}/diff", self.pipeline_diff),
            Route("/pipelines/{pipeline_id}/attempts/{set_id}/diff", self.attempts_diff),
            Route("/pipelines/{pipeline_id}/pick", self.pick, methods=["POST"]),
            Route("/pipelines/{pipeline_id}/stop", self.stop, methods=["POST"]),
            Route("/pipelines/{pipeline_id}/retry", self.retry, methods=["POST"]),
            Route("/pipelines/{pipeline_id}/preview", self.preview, methods=["POST"]),
            Route("/pipelines/{pipeline_id}/preview-stop", self.preview_stop, methods=["POST"]),
            Route("/pipelines/{pipeline_id}/follow-up", self.follow_up, methods=["POST"]),
            Route("/pipelines/{pipeline_id}/implement", self.implement, methods=["POST"]),
            Route("/pipelines/{pipeline_id}/comment", self.line_comment, methods=["POST"]),
            Route("/pipelines/{pipeline_id}/viewed", self.mark_viewed, methods=["POST"]),
            Route("/pipelines/{pipeline_id}/kept/{entry}", self.kept_bundle),
            Route("/runs/{run_id}", self.run_page),
            Route("/runs/{run_id}/events", self.run_events),
            Route("/runs/{run_id}/log.txt", self.run_log_text),
            Route("/spend", self.spend_page),
            Route("/spend.csv", self.spend_csv),
            Route("/fleet", self.fleet),
            Route("/events/fleet", self.fleet_events),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ]

    async def close(self) -> None:
        await self.board_feed.close()
        await self.run_feeds.close()

    # --- pages ------------------------------------------------------------------------

    async def board(self, request: Request) -> Response:
        viewer = await current_viewer(request)
        if viewer is None:
            return _to_login(request)
        filters = Filters.from_query(request.query_params)
        pipelines = await self._pipelines()
        loaded = await data.load_board(pipelines, _visible(viewer), self.summaries)
        pulls = loaded.pulls
        placed = place(loaded.summaries, pulls.numbers, filters)
        usage = await self.usage.of(pipelines.redis, placed.runs())
        board = build_board(placed, pulls.numbers, pulls.titles, usage, _now())
        return self._page(request, viewer, "board.html.j2", board=board, filters=filters)

    async def pipeline_page(self, request: Request) -> Response:
        viewer = await current_viewer(request)
        if viewer is None:
            return _to_login(request)
        pipeline = await self._visible_pipeline(request, viewer)
        redis = await self.redis.get()
        views = await data.run_views(redis, [run.run_id for run in pipeline.runs])
        pull = await pull_of_pipeline(redis, pipeline)
        pull_title = await pull_title_of(redis, pipeline.id) if pull is not None else ""
        web = html_url(pipeline.clone_url)
        preview = await previews.load_record(redis, pipeline.id)
        kept_sets = await kept.kept_of(redis, pipeline.id, pipeline.clone_url)
        summary = summarise(pipeline)
        column = column_of(summary, pull)
        return self._page(
            request,
            viewer,
            "pipeline.html.j2",
            tab=TAB_STATES[column],
            state=state_words(summary, column),
            updated=summary.updated_at,
            going=summary.run if summary.run and summary.activity != "finished" else None,
            plan_run=_plan_to_implement(pipeline),
            pushed=pull is not None or summary.commits > 0,
            preview=preview,
            preview_url=previews.safe_url(preview) if preview else "",
            pipeline=pipeline,
            runs=list(reversed(pipeline.runs)),
            views=views,
            pull=pull,
            pull_title=" ".join(pull_title.split()),
            web=web,
            kept=kept_sets,
            attempt_sets=attempts.sets_of(pipeline),
            answers=await data.answers_of(redis, pipeline.id),
            may_act=may_act(viewer, pipeline.repo),
            agents=AGENTS,
            max_attempts=self.settings.policy_max_attempts,
            error=request.query_params.get("error", "")[:300],
            asked=request.query_params.get("asked", "") in ASKED,
        )

    async def pipeline_diff(self, request: Request) -> Response:
        viewer = await current_viewer(request)
        if viewer is None:
            return _to_login(request)
        pipeline = await self._visible_pipeline(request, viewer)
        page: DiffPage = await load_diff(await self._github_app(), pipeline)
        seen = await data.viewed_of(await self.redis.get(), pipeline.id, viewer.login)
        html = render(
            "_diff.html.j2", diff=page, viewed=seen, may_act=may_act(viewer, pipeline.repo)
        )
        return HTMLResponse(html)

    async def attempts_diff(self, request: Request) -> Response:
        """A set's attempts' diffs side by side, each against the commit they started from."""
        viewer = await current_viewer(request)
        if viewer is None:
            return _to_login(request)
        pipeline = await self._visible_pipeline(request, viewer)
        set_id = request.path_params["set_id"]
        attempt_set = pipeline.attempt_set(set_id) if is_valid_id(set_id) else None
        if attempt_set is None:
            raise HTTPException(404, "No such set of attempts.")
        found = await attempts.load_diffs(await self._github_app(), pipeline, attempt_set)
        return HTMLResponse(render("_attempt_diffs.html.j2", diffs=found))

    async def mark_viewed(self, request: Request) -> Response:
        """Mark one file's change viewed (or not) for the signed-in person."""
        viewer = await current_viewer(request)
        if viewer is None:
            raise HTTPException(401, "Sign in first.")
        form = await checked_form(request)
        pipeline = await self._visible_pipeline(request, viewer)
        name, digest = str(form.get("file") or ""), str(form.get("digest") or "")
        if not name or len(name) > data.VIEWED_NAME_CHARS or not _is_digest(digest):
            raise HTTPException(400, "Which file, and which change of it?")
        redis = await self.redis.get()
        await data.mark_viewed(
            redis, pipeline.id, viewer.login, name, digest if form.get("viewed") == "1" else ""
        )
        return Response(status_code=204)

    async def kept_bundle(self, request: Request) -> Response:
        """A kept set's commits as a git bundle, for people who may push to the repository
        (GitHub may have refused them for what they hold, such as a secret)."""
        viewer = await current_viewer(request)
        if viewer is None:
            return _to_login(request)
        pipeline = await self._visible_pipeline(request, viewer)
        if not may_act(viewer, pipeline.repo):
            raise HTTPException(403, "Kept commits are for people who may push to the repository.")
        redis = await self.redis.get()
        entry = request.path_params["entry"]
        found = await kept.kept_of(redis, pipeline.id, pipeline.clone_url)
        record = next((k for k in found if k.id == entry), None)
        if not is_valid_id(entry) or record is None or record.bundle is None:
            raise HTTPException(404, "No such kept bundle.")
        name = f"{pipeline.id}-{record.id}.bundle"
        return StreamingResponse(
            kept.bundle_chunks(redis, record),
            media_type="application/octet-stream",
            headers={
                "Content-Disposition": f'attachment; filename="{name}"',
                "Content-Length": str(record.bundle.size),
                "Cache-Control": "no-store",
            },
        )

    async def run_page(self, request: Request) -> Response:
        viewer = await current_viewer(request)
        if viewer is None:
            return _to_login(request)
        pipeline, run = await self._visible_run(request, viewer)
        run_id = run.run_id
        views = await data.run_views(await self.redis.get(), [run_id])
        return self._page(
            request,
            viewer,
            "run.html.j2",
            tab=TAB_STATES[run_column(run.status, run.outcome, len(run.commits), run.mode)],
            pipeline=pipeline,
            run=run,
            view=views.get(run_id),
            may_act=may_act(viewer, pipeline.repo),
            retention_days=self.settings.log_retention_days,
        )

    async def run_log_text(self, request: Request) -> Response:
        """The run's stored log as plain text, one line per event with its time (UTC)."""
        viewer = await current_viewer(request)
        if viewer is None:
            return _to_login(request)
        run_id = (await self._visible_run(request, viewer))[1].run_id
        redis = await self.redis.get()

        async def lines() -> AsyncIterator[str]:
            async for entry_id, raw in data.stored_events(redis, run_id):
                at = stream_time(entry_id)
                when = at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if at else "?"
                yield f"{when} {plain_text(log_line(raw))}\n"

        return StreamingResponse(
            lines(),
            media_type="text/plain; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="{run_id}.log"',
                "Cache-Control": "no-store",
            },
        )

    async def spend_page(self, request: Request) -> Response:
        """Cost and tokens by repository, person or agent, per day or month: only of the
        repositories the viewer sees."""
        viewer = await current_viewer(request)
        if viewer is None:
            return _to_login(request)
        query = spendview.Query.from_query(request.query_params)
        today = _now().date()
        shown = spendview.periods(query.period, today)
        seen = spenddata.visibility(_visible(viewer))
        sums = await self.spend.partials(await self.redis.get(), query, shown, seen, today)
        table = spendview.tabulate(sums, query, shown)
        return self._page(request, viewer, "spend.html.j2", table=table, query=query)

    async def spend_csv(self, request: Request) -> Response:
        viewer = await current_viewer(request)
        if viewer is None:
            raise HTTPException(401, "Sign in first.")
        query = spendview.Query.from_query(request.query_params)
        shown = spendview.periods(query.period, _now().date())
        seen = spenddata.visibility(_visible(viewer))
        rows = await self.spend.visible_rows(await self.redis.get(), query.period, shown, seen)
        return Response(
            spendview.csv_text(rows, shown),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="trimo-spend-{query.period}.csv"',
                "Cache-Control": "no-store",
            },
        )

    async def fleet(self, request: Request) -> Response:
        viewer = await current_viewer(request)
        if viewer is None:
            return _to_login(request)
        if not viewer.admin:
            raise HTTPException(403, "The fleet page is for Trimo's admins (TRIMO_ADMINS).")
        fleet = await self._fleet()
        return self._page(
            request, viewer, "fleet.html.j2", fleet=fleet, now=_now(), app_version=__version__,
            shown=_digest(_fleet_print(fleet)),
        )  # fmt: skip

    async def _fleet(self) -> data.Fleet:
        pipelines = await self._pipelines()
        summaries = await self.summaries.all(pipelines)
        waiting = {s.run.label for s in summaries if s.activity == "queued" and s.run}
        return await data.load_fleet(pipelines.redis, waiting)

    async def new_pipeline_page(self, request: Request) -> Response:
        viewer = await current_viewer(request)
        if viewer is None:
            return _to_login(request)
        return self._new_form(request, viewer, error="", values={})

    def _new_form(
        self, request: Request, viewer: Viewer, error: str, values: Mapping[str, str]
    ) -> Response:
        repos = sorted((r for r in viewer.repos if may_act(viewer, r)), key=str.lower)
        return self._page(
            request,
            viewer,
            "new.html.j2",
            repos=repos,
            agents=AGENTS,
            max_attempts=self.settings.policy_max_attempts,
            error=error,
            values=values,
            status=400 if error else 200,
        )

    # --- live -------------------------------------------------------------------------

    async def board_events(self, request: Request) -> Response:
        viewer = await current_viewer(request)
        if viewer is None:
            raise HTTPException(401, "Sign in first.")
        filters = Filters.from_query(request.query_params)

        async def stream() -> AsyncIterator[str]:
            yield sse("hello", "{}")
            async with self.board_feed.listen() as listener:
                async for update in _updates(listener):
                    if isinstance(update, str):
                        yield update
                        continue
                    summary = update.summary
                    if not viewer.sees(summary.repo):
                        continue
                    card = card_of(summary, update.pull, update.usage, _now(), update.pull_title)
                    if not matches(summary, card.column, filters):
                        yield sse("remove", json.dumps({"id": card.id}))
                        continue
                    html = render_card(card)
                    moved = {"id": card.id, "column": card.column, "html": html}
                    yield sse("card", json.dumps(moved))

        return _event_stream(stream())

    async def pipeline_events(self, request: Request) -> Response:
        """`changed` (its column and state words) whenever the pipeline changes; `hello`
        first, with when it last changed, so a page drawn before the stream opened catches
        up."""
        viewer = await current_viewer(request)
        if viewer is None:
            raise HTTPException(401, "Sign in first.")
        pipeline = await self._visible_pipeline(request, viewer)

        async def stream() -> AsyncIterator[str]:
            async with self.board_feed.listen() as listener:
                found = await (await self._pipelines()).summaries([pipeline.id])
                updated = found[0].updated_at.isoformat() if found else ""
                yield sse("hello", json.dumps({"updated": updated}))
                async for update in _updates(listener):
                    if isinstance(update, str):
                        yield update
                        continue
                    if update.summary.id != pipeline.id:
                        continue
                    column = column_of(update.summary, update.pull)
                    state = state_words(update.summary, column)
                    yield sse("changed", json.dumps({"tab": TAB_STATES[column], "state": state}))

        return _event_stream(stream())

    async def fleet_events(self, request: Request) -> Response:
        """`changed` whenever the runners or queues the fleet page shows change: looked at on
        every pipeline change and every `FLEET_LOOK_SECONDS` (heartbeats have no channel)."""
        viewer = await current_viewer(request)
        if viewer is None:
            raise HTTPException(401, "Sign in first.")
        if not viewer.admin:
            raise HTTPException(403, "The fleet page is for Trimo's admins (TRIMO_ADMINS).")

        shown = request.query_params.get("shown", "")

        async def stream() -> AsyncIterator[str]:
            yield sse("hello", "{}")
            seen = _fleet_print(await self._fleet())
            if shown and shown != _digest(seen):  # it changed before this stream began
                yield sse("changed", "{}")
            async with self.board_feed.listen() as listener:
                while True:
                    try:
                        await _within(listener.get(), FLEET_LOOK_SECONDS)
                    except TimeoutError:
                        pass
                    except Overflow:
                        yield sse("reload", "{}")
                        return
                    now = _fleet_print(await self._fleet())
                    if now != seen:
                        seen = now
                        yield sse("changed", "{}")

        return _event_stream(stream())

    async def run_events(self, request: Request) -> Response:
        viewer = await current_viewer(request)
        if viewer is None:
            raise HTTPException(401, "Sign in first.")
        run_id = (await self._visible_run(request, viewer))[1].run_id
        after = request.headers.get("last-event-id") or request.query_params.get("after") or None
        if after is not None and not _is_stream_id(after):
            after = None

        async def stream() -> AsyncIterator[str]:
            entries = self.run_feeds.follow(run_id, after, KEEPALIVE_SECONDS)
            try:
                async for entry in entries:
                    if entry is None:
                        yield ": keepalive\n\n"
                        continue
                    entry_id, raw = entry
                    line = log_line(raw)
                    html = render("_log_line.html.j2", line=line, entry_id=entry_id)
                    yield sse("line", html, entry_id)
                    if line.kind == "end":
                        yield sse("end", json.dumps({"outcome": line.title}))
            except Overflow:
                yield sse("reload", "{}")
            finally:
                await entries.aclose()

        return _event_stream(stream())

    # --- actions ----------------------------------------------------------------------

    async def stop(self, request: Request) -> Response:
        return await self._act(request, "stop")

    async def retry(self, request: Request) -> Response:
        return await self._act(request, "retry")

    async def follow_up(self, request: Request) -> Response:
        return await self._act(request, "run")

    async def pick(self, request: Request) -> Response:
        """Keep one attempt: its commits become the pipeline's branch (`/trimo pick N`)."""
        return await self._act(request, "pick")

    async def line_comment(self, request: Request) -> Response:
        """A comment on a line of the diff: a follow-up given that file, line and hunk."""
        return await self._act(request, "comment")

    async def implement(self, request: Request) -> Response:
        """A follow-up that carries out the latest discovery run's plan (the agent is given
        that plan as "the plan")."""
        return await self._act(request, "implement")

    async def preview(self, request: Request) -> Response:
        return await self._act(request, "preview")

    async def preview_stop(self, request: Request) -> Response:
        return await self._act(request, "preview_stop")

    async def _act(self, request: Request, action: str) -> Response:
        viewer = await current_viewer(request)
        if viewer is None:
            raise HTTPException(401, "Sign in first.")
        form = await checked_form(request)
        pipeline = await self._visible_pipeline(request, viewer)
        back = f"/pipelines/{quote(pipeline.id)}"
        if not may_act(viewer, pipeline.repo):
            raise HTTPException(403, f"You need {LEAST_ROLE_TO_ACT} access to {pipeline.repo}.")
        ask: dict[str, str] = {"pipeline": pipeline.id}
        if action == "pick":
            known = [run.attempt for run in pipeline.runs if run.attempt]
            number = parse_pick(dict(form), known)
            if isinstance(number, FormError):
                return RedirectResponse(f"{back}?error={quote(number.message)}", status_code=303)
            ask["attempt"] = str(number)
        elif action == "stop":
            run_id = str(form.get("run_id") or pipeline.active_run or "")
            ask["run_id"] = run_id if pipeline.find(run_id) else ""
        elif action == "retry":
            last = pipeline.last_run()
            ask["run_id"] = str(form.get("run_id") or (last.run_id if last else ""))
        elif action in ("preview", "preview_stop"):
            pass  # the pipeline is all a preview needs
        elif action == "implement":
            ask |= {"prompt": IMPLEMENT_PLAN, "agent": ""}
        elif action == "comment":
            comment = parse_line_comment(dict(form))
            if isinstance(comment, FormError):
                return RedirectResponse(f"{back}?error={quote(comment.message)}", status_code=303)
            ask |= {"prompt": comment.prompt, "agent": "", "path": comment.path,
                    "line": str(comment.line), "diff_hunk": comment.diff_hunk}  # fmt: skip
        else:
            parsed = parse_follow_up(_with_agents(form))
            if isinstance(parsed, FormError):
                return RedirectResponse(f"{back}?error={quote(parsed.message)}", status_code=303)
            ask |= {"prompt": parsed.prompt, "agent": parsed.agent} | parsed.attempts.ask()
        repository = {
            "name": pipeline.repo.partition("/")[2],
            "full_name": pipeline.repo,
            "owner": {"login": pipeline.repo.partition("/")[0]},
            "clone_url": pipeline.clone_url,
            "default_branch": pipeline.base_branch,
        }
        asked = "run" if action in ("implement", "comment") else action
        await self._enqueue(viewer, asked, repository, pipeline.installation_id, ask)
        return RedirectResponse(f"{back}?asked={asked if action == 'comment' else action}",
                                status_code=303)  # fmt: skip

    async def new_pipeline(self, request: Request) -> Response:
        viewer = await current_viewer(request)
        if viewer is None:
            raise HTTPException(401, "Sign in first.")
        form = await checked_form(request)
        fields = _with_agents(form)
        values = {k: str(v) for k, v in fields.items() if k != "csrf" and isinstance(v, str)}
        allowed = {r.lower(): r for r in viewer.repos if may_act(viewer, r)}
        parsed = parse_new_pipeline(values, allowed)
        if isinstance(parsed, FormError):
            return self._new_form(request, viewer, parsed.message, values)
        redis = await self.redis.get()
        installation = await installation_for_repo(redis, parsed.repo)
        if installation is None:
            message = f"Trimo is not installed on {parsed.repo}."
            return self._new_form(request, viewer, message, values)
        owner, _, name = parsed.repo.partition("/")
        repository = {
            "name": name,
            "full_name": parsed.repo,
            "owner": {"login": owner},
            "clone_url": "",
        }
        ask = {"prompt": parsed.prompt, "agent": parsed.agent, "base_branch": parsed.base_branch}
        ask |= parsed.attempts.ask()
        delivery_id = await self._enqueue(viewer, "new", repository, installation, ask)
        return RedirectResponse(f"/started/{delivery_id}", status_code=303)

    async def branches(self, request: Request) -> Response:
        """The branches of a repository the viewer may start pipelines on (`?repo=`), for the
        New pipeline form's base branch; read from GitHub at most once a minute."""
        viewer = await current_viewer(request)
        if viewer is None:
            raise HTTPException(401, "Sign in first.")
        allowed = {r.lower(): r for r in viewer.repos if may_act(viewer, r)}
        repo = allowed.get(request.query_params.get("repo", "").lower())
        if repo is None:
            raise HTTPException(404, "Not one of your repositories.")
        cached = self._branches.get(repo.lower())
        if cached is not None and cached[0] > asyncio.get_running_loop().time():
            return JSONResponse({"branches": cached[1]})
        names: list[str] = []
        installation = await installation_for_repo(await self.redis.get(), repo)
        github = await self._github_app()
        if installation is not None and github is not None:
            try:
                names = await (await github.repo(installation, repo)).branches()
            except (RequestFailed, RequestError, UnexpectedAnswer, TimeoutError) as exc:
                log.warning("%s: no branches from GitHub: %s", repo, exc)
        if len(self._branches) > BRANCHES_CACHED:
            self._branches.clear()
        self._branches[repo.lower()] = (asyncio.get_running_loop().time() + BRANCHES_SECONDS, names)
        return JSONResponse({"branches": names})

    async def started(self, request: Request) -> Response:
        """Where Start lands: the new pipeline once the App worker made it; until then a
        page that looks again every second."""
        viewer = await current_viewer(request)
        if viewer is None:
            return _to_login(request)
        delivery_id = request.path_params["delivery_id"]
        if not is_valid_id(delivery_id):
            raise HTTPException(404, "No such request.")
        redis = await self.redis.get()
        pipeline_id = await data.started_pipeline(redis, delivery_id)
        pipeline = await (await self._pipelines()).get(pipeline_id) if pipeline_id else None
        if pipeline is not None and viewer.sees(pipeline.repo):
            return RedirectResponse(f"/pipelines/{quote(pipeline.id)}", status_code=303)
        return self._page(request, viewer, "starting.html.j2")

    async def _enqueue(
        self,
        viewer: Viewer,
        action: str,
        repository: dict[str, Any],
        installation_id: int,
        ask: dict[str, str],
    ) -> str:
        """Hand a request to the App worker; its delivery id."""
        payload = {
            "action": action,
            "repository": repository,
            "installation": {"id": installation_id},
            "sender": {"login": viewer.login, "type": "User"},
            "ask": ask,
        }
        delivery_id = f"dash-{secrets.token_hex(12)}"
        await enqueue_delivery(await self.redis.get(), DASHBOARD_EVENT, delivery_id, payload)
        log.info("dashboard: %s asked %s (delivery %s)", viewer.login, action, delivery_id)
        return delivery_id

    # --- helpers ----------------------------------------------------------------------

    async def _visible_pipeline(self, request: Request, viewer: Viewer) -> Pipeline:
        pipeline_id = request.path_params["pipeline_id"]
        pipelines = await self._pipelines()
        pipeline = await pipelines.get(pipeline_id) if is_valid_id(pipeline_id) else None
        if pipeline is None or not viewer.sees(pipeline.repo):
            raise HTTPException(404, "No such pipeline, or not one of your repositories.")
        return pipeline

    async def _visible_run(self, request: Request, viewer: Viewer) -> tuple[Pipeline, PipelineRun]:
        run_id = request.path_params["run_id"]
        found = await (await self._pipelines()).get_run(run_id) if is_valid_id(run_id) else None
        if found is None or not viewer.sees(found[0].repo):
            raise HTTPException(404, "No such run, or not one of your repositories.")
        return found

    async def _github_app(self) -> GitHubApp | None:
        """The App's GitHub client, when its id and key are configured."""
        if self._github is None and self.settings.github_app_id is not None:
            try:
                self.settings.private_key()
            except SettingsError:
                return None
            self._github = GitHubApp(self.settings, await self.redis.get())
        return self._github

    def _page(
        self, request: Request, viewer: Viewer, template: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        html = render(
            template,
            viewer=viewer,
            csrf=csrf_token(request),
            path=request.url.path,
            now=context.pop("now", _now()),
            **context,
        )
        return HTMLResponse(html, status_code=status)


def _with_agents(form: FormData) -> dict[str, object]:
    """A form's fields, its `agents` boxes (several of one name) as one comma-separated text."""
    fields: dict[str, object] = dict(form)
    fields["agents"] = ",".join(v for v in form.getlist("agents") if isinstance(v, str))
    return fields


def _plan_to_implement(pipeline: Pipeline) -> str:
    """The id of the discovery run whose plan the pipeline's next run would carry out: its
    latest run, when that is a discovery that finished with a plan ("" otherwise)."""
    last = pipeline.last_run()
    if last is None or last.mode != "discover" or last.outcome is not Outcome.SUCCESS:
        return ""
    return last.run_id if last.plan.strip() else ""


def _visible(viewer: Viewer) -> list[str] | None:
    return None if viewer.admin else [repo.lower() for repo in viewer.repos]


def _to_login(request: Request) -> Response:
    return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _fleet_print(fleet: data.Fleet) -> str:
    """What the fleet page shows, but its clocks: it changed when this did."""
    runners = [
        (r.id, r.host, sorted(r.labels), sorted(r.running), r.capacity, r.version)
        for r in fleet.runners
    ]
    queues = [(q.label, q.depth, q.served) for q in fleet.queues]
    return json.dumps([runners, queues], default=str)


def _is_digest(value: str) -> bool:
    return len(value) == 16 and all(c in "0123456789abcdef" for c in value)


def _is_stream_id(value: str) -> bool:
    millis, _, seq = value.partition("-")
    return value.isascii() and millis.isdigit() and seq.isdigit() and len(value) < 40


async def _updates(listener: Listener[PipelineUpdate]) -> AsyncIterator[PipelineUpdate | str]:
    """A board listener's updates; a keepalive comment whenever it is quiet for
    KEEPALIVE_SECONDS, and `reload` to end with when it fell behind."""
    while True:
        try:
            yield await _within(listener.get(), KEEPALIVE_SECONDS)
        except TimeoutError:
            yield ": keepalive\n\n"
        except Overflow:
            yield sse("reload", "{}")
            return


async def _within(awaitable: Awaitable[T], seconds: float) -> T:
    return await asyncio.wait_for(awaitable, seconds)


def _event_stream(stream: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
