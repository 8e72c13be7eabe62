"""Which installation serves each repository, as the installation events told (kept in Redis).

Events about a repository carry their installation's id; this answers when one does not,
and tells the dashboard where the App is installed.
"""

from __future__ import annotations

from typing import Final

import redis.asyncio as aioredis

from app import redisio

REPO_INSTALLATIONS: Final = "trimo:installation-of-repo"
"""Hash: lowercased `owner/name` -> installation id."""
INSTALLATIONS: Final = "trimo:installations"
"""Hash: installation id -> JSON `{account, suspended}`."""


def repos_key(installation_id: int) -> str:
    """Set of the repositories (lowercased full names) an installation serves."""
    return f"trimo:installation:{installation_id}:repos"


async def installation_for_repo(redis: aioredis.Redis, full_name: str) -> int | None:
    raw = await redisio.hget(redis, REPO_INSTALLATIONS, full_name.lower())
    return int(raw) if raw is not None and raw.isdigit() else None
