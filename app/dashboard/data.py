"""What the dashboard's pages read from Redis, in as few round trips as a page allows."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import redis.asyncio as aioredis

from app import redisio
from app.dashboard.board import Usage
from app.pipelines import Pipelines
from app.reporter import PULL_OF_PIPELINE, VIEW_PREFIX
from app.runview import RunView
from app.summary import PipelineSummary
from runner import contract
from runner.registry import RunnerInfo, online_runners

QUEUE_PREFIX = contract.run_queue("")


def pull_numbers(summaries: Iterable[PipelineSummary], opened: Mapping[str, int]) -> dict[str, int]:
    """The pull request of each open pipeline: its own number, or the one opened for it."""
    pulls: dict[str, int] = {}
    for summary in summaries:
        if summary.kind == "pull":
            pulls[summary.id] = summary.number
        elif summary.id in opened:
            pulls[summary.id] = opened[summary.id]
    return pulls


def usage_of(raw: bytes | str | None) -> Usage | None:
    """Tokens and cost from a stored run view, reading only those fields."""
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        return Usage(
            input_tokens=int(data.get("input_tokens") or 0),
            output_tokens=int(data.get("output_tokens") or 0),
            cost_usd=float(data["cost_usd"]) if data.get("cost_usd") is not None else None,
        )
    except (ValueError, TypeError, AttributeError):
        return None


@dataclass(frozen=True)
class BoardData:
    summaries: list[PipelineSummary]
    pulls: dict[str, int]
    usage: dict[str, Usage]


async def board_extras(
    redis: aioredis.Redis, summaries: list[PipelineSummary]
) -> tuple[dict[str, int], dict[str, Usage]]:
    """Pull request numbers and the shown runs' usage of `summaries`: one round trip."""
    run_ids = [s.run.run_id for s in summaries if s.run is not None]
    pipe = redis.pipeline(transaction=False)
    pipe.hmget(PULL_OF_PIPELINE, [s.id for s in summaries] or ["-"])
    pipe.mget([VIEW_PREFIX + run_id for run_id in run_ids] or [VIEW_PREFIX + "-"])
    raw_pulls, raw_views = await pipe.execute()
    opened = {
        s.id: int(raw)
        for s, raw in zip(summaries, raw_pulls, strict=False)
        if raw is not None and redisio.as_text(raw) and str(redisio.as_text(raw)).isdigit()
    }
    usage = {
        run_id: found
        for run_id, raw in zip(run_ids, raw_views, strict=False)
        if (found := usage_of(raw)) is not None
    }
    return pull_numbers(summaries, opened), usage


async def load_board(pipelines: Pipelines, visible: Iterable[str] | None) -> BoardData:
    """Every pipeline the viewer sees (`visible` repositories, lowercased; None: all)."""
    summaries = await pipelines.summaries(await pipelines.recent_ids())
    if visible is not None:
        allowed = set(visible)
        summaries = [s for s in summaries if s.repo.lower() in allowed]
    pulls, usage = await board_extras(pipelines.redis, summaries)
    return BoardData(summaries=summaries, pulls=pulls, usage=usage)


async def run_views(redis: aioredis.Redis, run_ids: list[str]) -> dict[str, RunView]:
    if not run_ids:
        return {}
    raws = await redis.mget([VIEW_PREFIX + run_id for run_id in run_ids])
    return {
        run_id: RunView.model_validate_json(raw)
        for run_id, raw in zip(run_ids, raws, strict=True)
        if raw is not None
    }


async def pull_of(redis: aioredis.Redis, pipeline_id: str) -> int | None:
    raw = await redisio.hget(redis, PULL_OF_PIPELINE, pipeline_id)
    return int(raw) if raw is not None and raw.isdigit() else None


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
