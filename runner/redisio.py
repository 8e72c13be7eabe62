"""`settle`: the value of a redis-py call on the async client, typed without `# type: ignore`.

redis-py types many commands as `Awaitable[T] | T` (one signature for the sync and the
async client), which an `await` cannot take under strict mypy. `app.redisio` builds on it.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def settle(result: Awaitable[T] | T) -> T:
    """The value of a redis-py call on the async client."""
    if inspect.isawaitable(result):
        return await result
    return result
