"""Spend: the cost and tokens of finished runs, summed in Redis as each run ends.

A run that ends adds, in one Lua call and once per run, to:
- the hashes of its day and of its month, one field per (repository, person, agent);
- its month's totals per repository and per person (what the monthly caps read);
- the all-time totals per agent (for `/metrics`).
- the versions of its day and month (runs added), so readers keep what is unchanged.
So the spend page reads at most a few dozen small hashes, and a cap two fields, however
many runs there were. Cost is kept in micro-dollars (whole numbers add up exactly).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Final, Literal

import redis.asyncio as aioredis

from app import redisio
from runner.events import Usage

DAY_PREFIX: Final = "trimo:spend:day:"
"""+ YYYY-MM-DD: a hash "repo\\tperson\\tagent" -> "micro-dollars input output runs"."""
MONTH_PREFIX: Final = "trimo:spend:month:"
"""+ YYYY-MM: the same, for the month."""
TOTALS_PREFIX: Final = "trimo:spend:totals:"
"""+ YYYY-MM: "repo:<owner/name>" and "person:<login>" (lower-cased) -> micro-dollars."""
AGENTS: Final = "trimo:spend:agents"
"""agent -> "micro-dollars input output runs", since spend was first kept."""
VERSIONS: Final = "trimo:spend:versions"
""""day:YYYY-MM-DD" and "month:YYYY-MM" -> runs added to it: readers cache what is unchanged."""
COUNTED_PREFIX: Final = "trimo:spend:counted:"
"""+ YYYY-MM: the ids of the runs already added (a run is added once)."""
DAY_TTL_SECONDS: Final = 400 * 86400
COUNTED_TTL_SECONDS: Final = 62 * 86400
MICRO: Final = 1_000_000
MAX_RUN_MICRO_USD: Final = 10**6 * MICRO
MAX_RUN_TOKENS: Final = 10**12
"""The most one run adds: what its agent reported is its word, and the ledger's sums are
Redis integers (HINCRBY) and Lua doubles, exact to 2**53."""
SEP: Final = "\t"

Period = Literal["day", "month"]

# KEYS: counted, day, month, totals, agents, versions
# ARGV: run id, field, micro, input, output, repo total field, person total field, agent,
#       day ttl, counted ttl, day version field, month version field
_ADD: Final = """
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('EXPIRE', KEYS[1], ARGV[10])
local function add(key, field)
  local m, i, o, r = 0, 0, 0, 0
  local old = redis.call('HGET', key, field)
  if old then
    local a, b, c, d = string.match(old, '^(%d+) (%d+) (%d+) (%d+)$')
    if a then m, i, o, r = tonumber(a), tonumber(b), tonumber(c), tonumber(d) end
  end
  redis.call('HSET', key, field, string.format('%.0f %.0f %.0f %.0f',
    m + tonumber(ARGV[3]), i + tonumber(ARGV[4]), o + tonumber(ARGV[5]), r + 1))
end
add(KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[9])
add(KEYS[3], ARGV[2])
add(KEYS[5], ARGV[8])
redis.call('HINCRBY', KEYS[4], ARGV[6], ARGV[3])
redis.call('HINCRBY', KEYS[4], ARGV[7], ARGV[3])
redis.call('HINCRBY', KEYS[6], ARGV[11], 1)
redis.call('HINCRBY', KEYS[6], ARGV[12], 1)
return 1
"""


@dataclass(frozen=True)
class Spent:
    """Cost and tokens of some runs."""

    micro_usd: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    runs: int = 0

    @property
    def cost_usd(self) -> float:
        return self.micro_usd / MICRO

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Spent) -> Spent:
        return Spent(
            self.micro_usd + other.micro_usd,
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.runs + other.runs,
        )


@dataclass(frozen=True)
class Row:
    """What one person's runs with one agent on one repository spent in one period."""

    period: str
    """YYYY-MM-DD or YYYY-MM."""
    repo: str
    person: str
    agent: str
    spent: Spent


def parse_spent(raw: str | None) -> Spent | None:
    """A stored "micro input output runs"; None for anything else."""
    parts = (raw or "").split(" ")
    if len(parts) != 4 or not all(part.isdigit() for part in parts):
        return None
    return Spent(*(int(part) for part in parts))


def micro_of(usage: Usage | None) -> int:
    cost = usage.cost_usd if usage is not None else None
    return min(max(0, round(cost * MICRO)), MAX_RUN_MICRO_USD) if cost is not None else 0


def _tokens(count: int) -> str:
    return str(min(max(0, count), MAX_RUN_TOKENS))


def month_of(day: date) -> str:
    return day.strftime("%Y-%m")


async def record(
    redis: aioredis.Redis,
    run_id: str,
    *,
    repo: str,
    person: str,
    agent: str,
    at: datetime,
    usage: Usage | None,
) -> bool:
    """Add a finished run's spend (once per run id); whether it was added now."""
    month = month_of(at.date())
    micro = micro_of(usage)
    field = SEP.join(_clean(part) for part in (repo, person, agent))
    added = await redisio.evaluate(
        redis,
        _ADD,
        [
            COUNTED_PREFIX + month,
            DAY_PREFIX + at.date().isoformat(),
            MONTH_PREFIX + month,
            TOTALS_PREFIX + month,
            AGENTS,
            VERSIONS,
        ],
        [
            run_id,
            field,
            str(micro),
            _tokens(usage.input_tokens if usage else 0),
            _tokens(usage.output_tokens if usage else 0),
            "repo:" + repo.lower(),
            "person:" + person.lower(),
            _clean(agent),
            str(DAY_TTL_SECONDS),
            str(COUNTED_TTL_SECONDS),
            "day:" + at.date().isoformat(),
            "month:" + month,
        ],
    )
    return bool(added)


async def month_to_date(
    redis: aioredis.Redis, day: date, repo: str, person: str
) -> tuple[int, int]:
    """Micro-dollars spent this month so far by `repo` and by `person`."""
    raws = await redisio.hmget(
        redis, TOTALS_PREFIX + month_of(day), "repo:" + repo.lower(), "person:" + person.lower()
    )
    return _micro(raws[0]), _micro(raws[1])


async def versions(redis: aioredis.Redis, period: Period, names: Sequence[str]) -> list[int]:
    """How many runs each of `names` (days or months) has had added: a reader that kept a
    period's rows reads them again only when this changed."""
    raws = await redisio.hmget(redis, VERSIONS, *(f"{period}:{name}" for name in names))
    return [_micro(raw) for raw in raws] if names else []


async def rows(redis: aioredis.Redis, period: Period, names: Iterable[str]) -> dict[str, list[Row]]:
    """Every (repository, person, agent) row of each of `names` (days or months): one round
    trip."""
    wanted = list(names)
    prefix = DAY_PREFIX if period == "day" else MONTH_PREFIX
    pipe = redis.pipeline(transaction=False)
    for name in wanted:
        pipe.hgetall(prefix + name)
    found: dict[str, list[Row]] = {}
    for name, fields in zip(wanted, await pipe.execute() if wanted else [], strict=True):
        found[name] = []
        for raw_field, raw_value in fields.items():
            parts = (redisio.as_text(raw_field) or "").split(SEP)
            spent = parse_spent(redisio.as_text(raw_value))
            if len(parts) == 3 and spent is not None:
                found[name].append(Row(name, parts[0], parts[1], parts[2], spent))
    return found


async def by_agent(redis: aioredis.Redis) -> dict[str, Spent]:
    """All-time spend per agent."""
    found = await redisio.hgetall(redis, AGENTS)
    return {agent: spent for agent, raw in found.items() if (spent := parse_spent(raw))}


def _micro(raw: str | None) -> int:
    return int(raw) if raw is not None and raw.lstrip("-").isdigit() else 0


def _clean(part: str) -> str:
    """A name as one field part: no separator, no line breaks."""
    return " ".join(part.split()) or "-"
