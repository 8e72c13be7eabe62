"""installation.* and installation_repositories.*: remember which installation serves each repo.

The bookkeeping itself (keys, lookups) is `app.github.installations`.
"""

from __future__ import annotations

import json
import logging

import redis.asyncio as aioredis

from app import redisio
from app.conversation.handlers.context import router
from app.edge.events import ANY_ACTION
from app.edge.payloads import InstallationEvent, InstallationRepositoriesEvent, InstalledRepo
from app.github.installations import INSTALLATIONS, REPO_INSTALLATIONS, repos_key
from app.services import Delivery

log = logging.getLogger("trimo.app")


async def _remember(
    redis: aioredis.Redis, event: InstallationEvent | InstallationRepositoriesEvent
) -> None:
    inst = event.installation
    info = {
        "account": inst.account.login if inst.account else None,
        "suspended": inst.suspended_at is not None,
    }
    await redisio.hset(redis, INSTALLATIONS, {str(inst.id): json.dumps(info)})


async def _add(redis: aioredis.Redis, installation_id: int, repos: list[InstalledRepo]) -> None:
    if not repos:
        return
    names = [repo.full_name.lower() for repo in repos]
    pipe = redis.pipeline(transaction=True)
    pipe.hset(REPO_INSTALLATIONS, mapping=dict.fromkeys(names, str(installation_id)))
    pipe.sadd(repos_key(installation_id), *names)
    await pipe.execute()


async def _remove(redis: aioredis.Redis, installation_id: int, names: list[str]) -> None:
    """Forget `names` for this installation (a repository moved to another one stays)."""
    if not names:
        return
    owners = await redisio.hmget(redis, REPO_INSTALLATIONS, *names)
    ours = [
        name for name, owner in zip(names, owners, strict=True) if owner == str(installation_id)
    ]
    pipe = redis.pipeline(transaction=True)
    if ours:
        pipe.hdel(REPO_INSTALLATIONS, *ours)
    pipe.srem(repos_key(installation_id), *names)
    await pipe.execute()


@router.on("installation", "created", "new_permissions_accepted", "unsuspend", "suspend")
async def installation_changed(delivery: Delivery) -> None:
    event = delivery.parse(InstallationEvent)
    redis = delivery.services.redis
    await _remember(redis, event)
    await _add(redis, event.installation.id, event.repositories or [])
    log.info("installation %s %s", event.installation.id, event.action)


@router.on("installation", "deleted")
async def installation_deleted(delivery: Delivery) -> None:
    event = delivery.parse(InstallationEvent)
    redis = delivery.services.redis
    inst_id = event.installation.id
    names = list(await redisio.smembers(redis, repos_key(inst_id)))
    names += [repo.full_name.lower() for repo in event.repositories or []]
    await _remove(redis, inst_id, sorted(set(names)))
    pipe = redis.pipeline(transaction=True)
    pipe.hdel(INSTALLATIONS, str(inst_id))
    pipe.delete(repos_key(inst_id))
    await pipe.execute()
    log.info("installation %s deleted", inst_id)


@router.on("installation", ANY_ACTION)
async def installation_other(delivery: Delivery) -> None:
    """Other installation actions: keep the installation's own record fresh."""
    await _remember(delivery.services.redis, delivery.parse(InstallationEvent))


@router.on("installation_repositories", "added", "removed")
async def repositories_changed(delivery: Delivery) -> None:
    event = delivery.parse(InstallationRepositoriesEvent)
    redis = delivery.services.redis
    await _remember(redis, event)
    await _add(redis, event.installation.id, event.repositories_added)
    removed = [repo.full_name.lower() for repo in event.repositories_removed]
    await _remove(redis, event.installation.id, removed)


@router.on("installation_repositories", ANY_ACTION)
async def repositories_other(delivery: Delivery) -> None:
    await _remember(delivery.services.redis, delivery.parse(InstallationRepositoriesEvent))
