"""What the dashboard's pages read from Redis, in as few round trips as a page allows."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import redis.asyncio as aioredis

from app import redisio
from app.dashboard.board import Usage
from app.reporting.channels.pullrequest import PULL_OF_PIPELINE, pull_title_field
from app.reporting.reporter import VIEW_PREFIX
from app.reporting.runview import RunView
from app.runs.pipelines import CHANGES, Pipelines
from app.runs.summary import PipelineSummary
from runner import contract
from runner.registry import RunnerInfo, online_runners

QUEUE_PREFIX = contract.run_queue("")
EVENTS_CHUNK = 500
VIEWED_PREFIX = "trimo:dashboard:viewed:"
"""+ <pipeline id>:<login, lowercased>: a hash, file name → the digest of its change viewed."""
VIEWED_NAME_CHARS = 1000
VIEWED_FILES = 2000
"""Marks kept per person and pipeline (a diff shows at most 100 files)."""
VIEWED_TTL_SECONDS = 90 * 86400
STARTED_PREFIX = "trimo:dashboard:started:"
"""+ the delivery id of a New pipeline request: the id of the pipeline it made."""
STARTED_TTL_SECONDS = 3600
ANSWERS_PREFIX = "trimo:dashboard:answers:"
"""+ the pipeline id: a list of answers to what people asked from its page (JSON, newest first)."""
ANSWERS_KEPT = 5
ANSWERS_TTL_SECONDS = 86400
ANSWER_CHARS = 600
StreamEntry = tuple[str, str]
"""(stream id, the event's JSON)."""


def stream_entries(
    raw: list[tuple[bytes | str, dict[bytes | str, bytes | str]]],
) -> list[StreamEntry]:
    found = []
    for entry_id, fields in raw:
        event = fields.get(b"event", fields.get("event"))
        found.append((redisio.as_text(entry_id) or "", redisio.as_text(event) or ""))
    return found


async def stored_events(
    redis: aioredis.Redis, run_id: str, after: str | None = None
) -> AsyncIterator[StreamEntry]:
    """A run's stored events after stream id `after` (None: from its first), read in
    chunks."""
    cursor = f"({after}" if after else "-"
    while True:
        raw = await redis.xrange(contract.run_events(run_id), cursor, "+", EVENTS_CHUNK)
        for entry in stream_entries(raw):
            yield entry
        if len(raw) < EVENTS_CHUNK:
            return
        cursor = f"({redisio.as_text(raw[-1][0])}"


def pull_numbers(summaries: Iterable[PipelineSummary], opened: Mapping[str, int]) -> dict[str, int]:
    """The pull request of each open pipeline: its own number, or the one opened for it."""
    pulls: dict[str, int] = {}
    for summary in summaries:
        if summary.kind == "pull":
            pulls[summary.id] = summary.number
        elif summary.id in opened:
            pulls[summary.id] = opened[summary.id]
    return pulls


def _step(data: Mapping[str, object]) -> str:
    """A run view's latest step: the checks it runs now, else its last tool call."""
    verifying = data.get("verifying")
    if isinstance(verifying, list) and verifying:
        return "checking " + ", ".join(str(name) for name in verifying[:3])
    tools = data.get("recent_tools")
    return str(tools[-1]) if isinstance(tools, list) and tools else ""


def usage_of(raw: bytes | str | None) -> Usage | None:
    """Tokens, cost and latest step from a stored run view, reading only those fields."""
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        return Usage(
            input_tokens=int(data.get("input_tokens") or 0),
            output_tokens=int(data.get("output_tokens") or 0),
            cost_usd=float(data["cost_usd"]) if data.get("cost_usd") is not None else None,
            step=_step(data),
        )
    except (ValueError, TypeError, AttributeError):
        return None


@dataclass(frozen=True)
class Pulls:
    """The pull requests of some pipelines: numbers and kept titles, by pipeline id."""

    numbers: dict[str, int]
    titles: dict[str, str]


@dataclass(frozen=True)
class BoardData:
    summaries: list[PipelineSummary]
    pulls: Pulls


async def pulls_of(redis: aioredis.Redis, summaries: list[PipelineSummary]) -> Pulls:
    """The pull request of each of `summaries` that has one open, with its title: one
    HMGET (the titles are kept beside the numbers)."""
    issues = [s.id for s in summaries if s.kind != "pull"]
    fields = issues + [pull_title_field(s.id) for s in summaries]
    raws = await redisio.hmget(redis, PULL_OF_PIPELINE, *fields) if fields else []
    opened = {
        pid: int(raw)
        for pid, raw in zip(issues, raws, strict=False)
        if raw is not None and raw.isdigit()
    }
    numbers = pull_numbers(summaries, opened)
    titles = {
        s.id: raw
        for s, raw in zip(summaries, raws[len(issues) :], strict=True)
        if raw and s.id in numbers
    }
    return Pulls(numbers=numbers, titles=titles)


async def usage_of_runs(redis: aioredis.Redis, run_ids: list[str]) -> dict[str, Usage]:
    """Tokens and cost of `run_ids`, from their stored views: one round trip."""
    raws = await redis.mget([VIEW_PREFIX + run_id for run_id in run_ids]) if run_ids else []
    return {
        run_id: found
        for run_id, raw in zip(run_ids, raws, strict=True)
        if (found := usage_of(raw)) is not None
    }


class UsageCache:
    """Usage of finished runs (it no longer changes), so a board reads only live runs'."""

    def __init__(self, limit: int = 20_000) -> None:
        self._final: dict[str, Usage] = {}
        self._limit = limit

    async def of(self, redis: aioredis.Redis, runs: list[tuple[str, bool]]) -> dict[str, Usage]:
        """Usage of `runs` (run id, whether it is over), by run id."""
        wanted = [run_id for run_id, _ in runs if run_id not in self._final]
        fetched = await usage_of_runs(redis, wanted)
        if len(self._final) > self._limit:
            self._final.clear()
        self._final.update(
            (run_id, fetched[run_id]) for run_id, over in runs if over and run_id in fetched
        )
        return {
            **fetched,
            **{run_id: self._final[run_id] for run_id, _ in runs if run_id in self._final},
        }


class SummaryCache:
    """The summaries a process has read, kept while the index says they have not changed:
    a board reads the index, and only the summaries of pipelines that changed since."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[float, PipelineSummary]] = {}

    async def all(self, pipelines: Pipelines) -> list[PipelineSummary]:
        """Every pipeline's summary, the latest changed first."""
        recent = await pipelines.recent()
        stale = [pid for pid, at in recent if self._known.get(pid, (None,))[0] != at]
        when = dict(recent)
        for summary in await pipelines.summaries(stale):
            self._known[summary.id] = (when[summary.id], summary)
        if len(self._known) > len(recent):
            self._known = {pid: self._known[pid] for pid in when if pid in self._known}
        return [self._known[pid][1] for pid, _ in recent if pid in self._known]


async def load_board(
    pipelines: Pipelines, visible: Iterable[str] | None, cache: SummaryCache
) -> BoardData:
    """Every pipeline the viewer sees (`visible` repositories, lowercased; None: all)."""
    summaries = await cache.all(pipelines)
    if visible is not None:
        allowed = set(visible)
        summaries = [s for s in summaries if s.repo.lower() in allowed]
    return BoardData(summaries=summaries, pulls=await pulls_of(pipelines.redis, summaries))


async def run_views(redis: aioredis.Redis, run_ids: list[str]) -> dict[str, RunView]:
    if not run_ids:
        return {}
    raws = await redis.mget([VIEW_PREFIX + run_id for run_id in run_ids])
    return {
        run_id: RunView.model_validate_json(raw)
        for run_id, raw in zip(run_ids, raws, strict=True)
        if raw is not None
    }


@dataclass(frozen=True)
class Queue:
    label: str
    depth: int
    served: bool


@dataclass(frozen=True)
class Fleet:
    runners: list[RunnerInfo]
    queues: list[Queue]


async def load_fleet(redis: aioredis.Redis, waiting_labels: Iterable[str]) -> Fleet:
    """Online runners, and the depth of every label's queue that a runner serves or a run
    waits for."""
    runners = await online_runners(redis)
    served = {label for runner in runners for label in runner.labels}
    queued = {
        (redisio.as_text(key) or "").removeprefix(QUEUE_PREFIX)
        async for key in redis.scan_iter(match=QUEUE_PREFIX + "*", _type="zset")
    }
    labels = sorted(served | queued | set(waiting_labels))
    pipe = redis.pipeline(transaction=False)
    for label in labels:
        pipe.zcard(contract.run_queue(label))
    depths = await pipe.execute() if labels else []
    queues = [
        Queue(label=label, depth=int(depth), served=label in served)
        for label, depth in zip(labels, depths, strict=True)
    ]
    return Fleet(runners=runners, queues=queues)


def _viewed_key(pipeline_id: str, login: str) -> str:
    return f"{VIEWED_PREFIX}{pipeline_id}:{login.lower()}"


async def viewed_of(redis: aioredis.Redis, pipeline_id: str, login: str) -> dict[str, str]:
    """The files of a pipeline's diff `login` marked viewed: name → the change's digest."""
    return await redisio.hgetall(redis, _viewed_key(pipeline_id, login))


async def mark_viewed(
    redis: aioredis.Redis, pipeline_id: str, login: str, name: str, digest: str
) -> None:
    """Mark change `digest` of file `name` viewed by `login` ("" unmarks it)."""
    key = _viewed_key(pipeline_id, login)
    if not digest:
        await redisio.hdel(redis, key, name)
        return
    pipe = redis.pipeline(transaction=False)
    pipe.hlen(key)
    pipe.hset(key, name, digest)
    pipe.expire(key, VIEWED_TTL_SECONDS)
    held, *_ = await pipe.execute()
    if int(held) >= VIEWED_FILES:  # bounded: past the cap, this mark alone stays
        pipe = redis.pipeline(transaction=True)
        pipe.delete(key)
        pipe.hset(key, name, digest)
        pipe.expire(key, VIEWED_TTL_SECONDS)
        await pipe.execute()


async def remember_started(redis: aioredis.Redis, delivery_id: str, pipeline_id: str) -> None:
    """The pipeline a New pipeline request (delivery `delivery_id`) made."""
    await redis.set(STARTED_PREFIX + delivery_id, pipeline_id, ex=STARTED_TTL_SECONDS)


async def started_pipeline(redis: aioredis.Redis, delivery_id: str) -> str | None:
    return redisio.as_text(await redis.get(STARTED_PREFIX + delivery_id))


@dataclass(frozen=True)
class Answer:
    """What Trimo answered to a request from a pipeline's page (plain text)."""

    at: datetime
    login: str
    text: str


def answer_text(markdown: str) -> str:
    """A reply written for GitHub as one plain line (its marks dropped), cut short."""
    plain = " ".join(markdown.replace("`", "").replace("*", "").split())
    return plain if len(plain) <= ANSWER_CHARS else plain[: ANSWER_CHARS - 1] + "…"


async def remember_answer(
    redis: aioredis.Redis, pipeline_id: str, login: str, markdown: str
) -> None:
    """Keep Trimo's answer to `login`'s request for the pipeline's page (a thread may not
    be where they look, or there may be none), and tell the page it changed."""
    at = datetime.now(UTC).isoformat()
    entry = json.dumps({"at": at, "login": login, "text": answer_text(markdown)})
    key = ANSWERS_PREFIX + pipeline_id
    pipe = redis.pipeline(transaction=True)
    pipe.lpush(key, entry)
    pipe.ltrim(key, 0, ANSWERS_KEPT - 1)
    pipe.expire(key, ANSWERS_TTL_SECONDS)
    pipe.publish(CHANGES, pipeline_id)
    await pipe.execute()


async def answers_of(redis: aioredis.Redis, pipeline_id: str) -> list[Answer]:
    """The pipeline's latest answers, newest first (unreadable entries skipped)."""
    found = []
    entries: list[bytes | str] = await redisio.settle(
        redis.lrange(ANSWERS_PREFIX + pipeline_id, 0, ANSWERS_KEPT - 1)
    )
    for raw in entries:
        try:
            entry = json.loads(raw)
            found.append(
                Answer(datetime.fromisoformat(entry["at"]), str(entry["login"]), str(entry["text"]))
            )
        except (ValueError, KeyError, TypeError):
            continue
    return found
