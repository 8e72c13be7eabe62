"""What the spend page reads from the ledger, kept between requests while it is unchanged.

A period's rows are read again only when its version (runs added to it) changed, and its
sums for one grouping and one set of visible repositories are made once per version: a page
reads the versions of its periods, today's rows when a run ended since, and adds up a few
dozen small sums.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Final

import redis.asyncio as aioredis

from app.dashboard import spendview
from app.runs import spend

PARTIALS_KEPT: Final = 20_000

Visibility = frozenset[str] | None
"""The repositories a viewer sees, lower-cased (None: an admin, all)."""


def visibility(repos: Iterable[str] | None) -> Visibility:
    return None if repos is None else frozenset(repo.lower() for repo in repos)


class SpendCache:
    def __init__(self) -> None:
        self._rows: dict[str, tuple[int, list[spend.Row]]] = {}
        self._partials: dict[tuple[str, int, spendview.Group, Visibility], spendview.Partial] = {}

    async def rows(
        self, redis: aioredis.Redis, period: spend.Period, shown: list[str]
    ) -> dict[str, tuple[int, list[spend.Row]]]:
        """(version, rows) of each period shown; only the changed ones are read."""
        versions = await spend.versions(redis, period, shown)
        stale = [
            name
            for name, version in zip(shown, versions, strict=True)
            if self._rows.get(f"{period}:{name}", (-1,))[0] != version
        ]
        # Versions first, rows after: rows newer than their version are read again next time.
        fetched = await spend.rows(redis, period, stale)
        for name, version in zip(shown, versions, strict=True):
            if name in fetched:
                self._rows[f"{period}:{name}"] = (version, fetched[name])
        return {name: self._rows[f"{period}:{name}"] for name in shown}

    async def partials(
        self,
        redis: aioredis.Redis,
        query: spendview.Query,
        shown: list[str],
        seen: Visibility,
        today: date,
    ) -> dict[str, spendview.Partial]:
        """Each period's sums by the query's grouping, over the repositories in `seen`. The
        current month is the sum of its days: a run that ends changes only today's sums."""
        if query.period == "day":
            return await self._sums(redis, "day", shown, query.group, seen)
        sums = await self._sums(redis, "month", shown[:-1], query.group, seen)
        days = [today.replace(day=day).isoformat() for day in range(1, today.day + 1)]
        by_day = await self._sums(redis, "day", days, query.group, seen)
        sums[shown[-1]] = spendview.merged(by_day.values())
        return sums

    async def _sums(
        self,
        redis: aioredis.Redis,
        period: spend.Period,
        names: list[str],
        group: spendview.Group,
        seen: Visibility,
    ) -> dict[str, spendview.Partial]:
        found = await self.rows(redis, period, names)
        if len(self._partials) > PARTIALS_KEPT:
            self._partials.clear()
        sums = {}
        for name, (version, rows) in found.items():
            key = (f"{period}:{name}", version, group, seen)
            if key not in self._partials:
                self._partials[key] = spendview.partial(spendview.visible(rows, seen), group)
            sums[name] = self._partials[key]
        return sums

    async def visible_rows(
        self, redis: aioredis.Redis, period: spend.Period, shown: list[str], seen: Visibility
    ) -> list[spend.Row]:
        """Every row of the periods shown, of the repositories in `seen` (for the CSV)."""
        found = await self.rows(redis, period, shown)
        return spendview.visible((row for _, rows in found.values() for row in rows), seen)
