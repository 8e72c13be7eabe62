"""Spend on the App's side, with real Redis and the GitHub stand-in: the ledger a finished
run adds to, the sum over a pipeline's runs, and the monthly caps a request meets through
the webhook path (recorded payloads, fixtures of test_app_worker)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from app.conversation.naming import pipeline_id
from app.conversation.policy import ServerPolicy, monthly_refusal
from app.ops.worker import SERVICES_KEY, build_services
from app.runs import spend
from app.runs.budget import LEAST_USD, Budget, MonthlyCaps, run_budget
from app.runs.pipelines import utcnow
from app.runs.summary import summarise
from runner.events import Usage
from runner.job import Outcome, RunFinished
from tests import test_app_worker as base
from tests.test_app_worker import OWNER, REPO, SCRIPT, TITLE, WRITER, World, run_id_for

world = base.world
fake = base.fake
OTHER = "carol"
DASHBOARD = "https://trimo.example.com"


def capped(world: World, **caps: float | str) -> None:
    """The App's services from here on, with `TRIMO_POLICY_MONTHLY_USD…` set to `caps`."""
    services = world.ctx[SERVICES_KEY]
    settings = services.settings.model_copy(update={"public_url": DASHBOARD + "/", **caps})
    world.ctx[SERVICES_KEY] = build_services(settings, world.pool, github_retry=False)


async def ask(world: World, login: str = WRITER) -> tuple[int, str]:
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    delivery = await world.send(
        "issue_comment", world.issue_comment(SCRIPT, number=issue.number, login=login)
    )
    return issue.number, run_id_for(issue.number, delivery)


async def spent(world: World, run_id: str, cost: float) -> None:
    """`run_id` ends having cost `cost`, as the reporter records a runner's finished event."""
    usage = Usage(input_tokens=1000, output_tokens=200, cost_usd=cost)
    await world.pipelines.finish(RunFinished(run_id=run_id, outcome=Outcome.SUCCESS, usage=usage))


def replies(world: World, number: int) -> list[str]:
    return [c.strip() for c in world.bot_comments(number) if "I can't start" in c]


async def test_a_repository_past_its_monthly_cap_starts_no_run(world: World) -> None:
    world.state.set_role(OWNER, REPO, OTHER, "write")
    capped(world, policy_monthly_usd=1.0)
    _, first = await ask(world)
    assert await world.queued() == [first]
    await spent(world, first, 0.6)
    _, second = await ask(world, OTHER)  # under the cap still: it goes
    assert await world.queued() == [first, second]
    await spent(world, second, 0.45)

    number, third = await ask(world)

    assert replies(world, number) == [
        f"@{WRITER} I can't start that run: This repository has reached its monthly cap of "
        "$1.00 (`TRIMO_POLICY_MONTHLY_USD`); its figures are on the dashboard's "
        f"[spend page]({DASHBOARD}/spend). No run starts until the month ends (UTC), unless "
        "whoever runs this Trimo server raises the cap."
    ]
    assert await world.queued() == [first, second]
    assert await world.job(third) is None


async def test_a_person_past_their_monthly_cap_is_refused_and_others_are_not(
    world: World,
) -> None:
    world.state.set_role(OWNER, REPO, OTHER, "write")
    capped(world, policy_monthly_usd_per_person=0.5)
    _, first = await ask(world)
    await spent(world, first, 0.5)

    number, _ = await ask(world)
    [refused] = replies(world, number)
    assert refused.startswith(
        f"@{WRITER} I can't start that run: You have reached the monthly cap of $0.50 per "
        "person (`TRIMO_POLICY_MONTHLY_USD_PER_PERSON`); your figures are on the dashboard's "
        f"[spend page]({DASHBOARD}/spend)."
    )

    number, other = await ask(world, OTHER)
    assert replies(world, number) == []
    assert await world.queued() == [first, other]


async def test_a_refusal_on_the_thread_reveals_no_spend_from_other_repositories(
    world: World,
) -> None:
    """The attack: on a public thread, ask once past your cap and the reply printed what you
    spent this month across every repository (and the repository's own total)."""
    capped(world, policy_monthly_usd=5.0, policy_monthly_usd_per_person=1.0)
    await spend.record(
        world.pool,
        "elsewhere-1",
        repo=f"{OWNER}/secret",
        person=WRITER,
        agent="script",
        at=datetime.now(UTC),
        usage=Usage(cost_usd=1.2345),
    )
    _, first = await ask(world)
    await spent(world, first, 3.8765)

    number, _ = await ask(world)

    [refused] = replies(world, number)
    assert "per person" in refused and f"]({DASHBOARD}/spend)" in refused
    for figure in ("1.23", "3.88", "5.11", "1.24", "5.1"):
        assert figure not in refused, refused


async def test_the_budget_in_the_repositorys_config_reaches_the_runner(world: World) -> None:
    world.gh.create_repo(
        OWNER, "capped", {".github/trimo.yml": "agent: script\nmax_cost_usd: 0.5\n"}
    )
    world.state.set_role(OWNER, "capped", WRITER, "write")
    issue = world.state.add_issue(OWNER, "capped", TITLE, "details")
    await world.send(
        "issue_comment", world.issue_comment(SCRIPT, number=issue.number, repo="capped")
    )
    [run_id] = await world.queued()
    request = await world.job(run_id)
    assert request is not None and request.max_cost_usd == 0.5


async def test_a_run_that_starts_after_spend_gets_only_what_is_left_of_the_repos_cap(
    world: World,
) -> None:
    """The attack: ask for a follow-up while a run is going (both under the cap), then the
    first run spends most of the cap: the follow-up started with no budget at all and ran
    past the month's cap to its time limit."""
    capped(world, policy_monthly_usd=1.0)
    number, first = await ask(world)
    delivery = await world.send("issue_comment", world.issue_comment(SCRIPT, number=number))
    second = run_id_for(number, delivery)
    await spent(world, first, 0.7)

    await world.pipelines.start_next_waiting(pipeline_id(f"{OWNER}/{REPO}", number))

    request = await world.job(second)
    assert request is not None and request.max_cost_usd == pytest.approx(0.3)
    assert (request.budget_cap, request.budget_shown) == (f"monthly cap of {OWNER}/{REPO}", True)


async def test_a_runs_budget_is_the_least_of_its_own_and_what_each_cap_left(
    world: World,
) -> None:
    capped(world, policy_monthly_usd=100.0, policy_monthly_usd_per_person=1.0)
    world.gh.create_repo(
        OWNER, "capped", {".github/trimo.yml": "agent: script\nmax_cost_usd: 0.5\n"}
    )
    world.state.set_role(OWNER, "capped", WRITER, "write")

    async def budget_of_next_run() -> tuple[float | None, str | None, bool]:
        issue = world.state.add_issue(OWNER, "capped", TITLE, "details")
        delivery = await world.send(
            "issue_comment", world.issue_comment(SCRIPT, number=issue.number, repo="capped")
        )
        run_id = f"{pipeline_id(f'{OWNER}/capped', issue.number)}-{delivery[:12]}"
        request = await world.job(run_id)
        assert request is not None
        return request.max_cost_usd, request.budget_cap, request.budget_shown

    assert await budget_of_next_run() == (0.5, None, True)  # its own budget is the least
    await spend.record(
        world.pool,
        "elsewhere-1",
        repo=f"{OWNER}/secret",
        person=WRITER,
        agent="script",
        at=datetime.now(UTC),
        usage=Usage(cost_usd=0.8),
    )
    usd, cap, shown = await budget_of_next_run()
    # What is left of the person's cap (0.2) is the budget; the reason will not print it.
    assert (usd, cap, shown) == (pytest.approx(0.2), f"monthly cap per person of @{WRITER}", False)


async def test_a_finished_run_is_added_once_by_day_month_person_and_agent(world: World) -> None:
    redis: aioredis.Redis = world.pool
    _, first = await ask(world)
    await spent(world, first, 0.25)
    await spent(world, first, 0.25)  # the event again (a retried delivery): added once
    pipeline, run = await world.pipelines.get_run(first) or (None, None)
    assert pipeline is not None and run is not None

    today = utcnow().date()
    [row] = (await spend.rows(redis, "day", [today.isoformat()]))[today.isoformat()]
    assert (row.repo, row.person, row.agent) == (f"{OWNER}/{REPO}", WRITER, "script")
    assert row.spent == spend.Spent(250_000, 1000, 200, 1)
    [month] = (await spend.rows(redis, "month", [spend.month_of(today)]))[spend.month_of(today)]
    assert month.spent == row.spent
    assert await spend.versions(redis, "day", [today.isoformat(), "2001-01-01"]) == [1, 0]
    assert await spend.month_to_date(redis, today, f"{OWNER}/{REPO}".upper(), WRITER) == (
        250_000,
        250_000,
    )
    assert await spend.by_agent(redis) == {"script": spend.Spent(250_000, 1000, 200, 1)}
    assert run.usage is not None and run.usage.cost_usd == 0.25


async def test_a_pipelines_spend_is_the_sum_of_all_its_runs(world: World) -> None:
    number, first = await ask(world)
    await spent(world, first, 0.87)
    delivery = await world.send("issue_comment", world.issue_comment(SCRIPT, number=number))
    second = run_id_for(number, delivery)
    assert second in await world.queued()  # the first had ended: the follow-up started
    # A follow-up that reported no usage leaves the pipeline's spend as it was.
    await world.pipelines.finish(RunFinished(run_id=second, outcome=Outcome.SUCCESS))
    pipeline, _ = await world.pipelines.get_run(second) or (None, None)
    assert pipeline is not None and len(pipeline.runs) == 2
    usage = summarise(pipeline).usage
    assert usage is not None
    assert (usage.cost_usd, usage.input_tokens, usage.output_tokens) == (0.87, 1000, 200)


async def test_stored_spend_that_is_not_in_the_ledgers_format_is_skipped(world: World) -> None:
    redis: aioredis.Redis = world.pool
    day = datetime(2026, 3, 4, tzinfo=UTC)
    await spend.record(
        redis, "r1", repo="o/r", person="p", agent="a", at=day, usage=Usage(cost_usd=0.1)
    )
    await redis.hset(spend.DAY_PREFIX + "2026-03-04", mapping={"x": "1 2 3 4", "o/r\tq\ta": "lots"})
    rows = await spend.rows(redis, "day", ["2026-03-04", "2026-03-05"])
    assert [(r.person, r.spent.micro_usd) for r in rows["2026-03-04"]] == [("p", 100_000)]
    assert rows["2026-03-05"] == []


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1 2 3 4", spend.Spent(1, 2, 3, 4)),
        ("1 2 3", None),
        ("-1 2 3 4", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_spent(raw: str | None, expected: spend.Spent | None) -> None:
    assert spend.parse_spent(raw) == expected


def test_monthly_caps_refuse_from_the_cap_on_and_name_each_cap_reached() -> None:
    both = ServerPolicy(monthly_usd=10.0, monthly_usd_per_person=2.0)
    assert monthly_refusal(ServerPolicy(), 1e9, 1e9, DASHBOARD) is None
    assert monthly_refusal(both, 9.99, 1.99, DASHBOARD) is None
    refused = monthly_refusal(both, 10.0, 2.0, DASHBOARD)
    assert refused is not None and len(refused.problems) == 3
    assert "$10.00 (`TRIMO_POLICY_MONTHLY_USD`)" in refused.message
    assert "$2.00 per person (`TRIMO_POLICY_MONTHLY_USD_PER_PERSON`)" in refused.message
    assert f"[spend page]({DASHBOARD}/spend)" in refused.message
    unknown = monthly_refusal(both, 10.0, 0.0, "")
    assert unknown is not None and "spend page (`/spend`)" in unknown.message
    only_person = monthly_refusal(both, 0.0, 2.5, DASHBOARD)
    assert only_person is not None and "This repository" not in only_person.message


@pytest.mark.parametrize(
    ("own", "caps", "spent", "expected"),
    [
        (None, MonthlyCaps(), (10**9, 10**9), Budget(None)),
        (0.5, MonthlyCaps(1.0, 1.0), (500_000, 0), Budget(0.5)),  # a tie: the run's own
        (None, MonthlyCaps(1.0, None), (250_000, 0), Budget(0.75, "monthly cap of o/r")),
        (
            0.5,
            MonthlyCaps(1.0, 2.0),
            (0, 1_900_000),
            Budget(0.1, "monthly cap per person of @p", False),
        ),
        # A cap reached while the run waited in line: stopped at the agent's first report.
        (None, MonthlyCaps(1.0, None), (1_300_000, 0), Budget(LEAST_USD, "monthly cap of o/r")),
    ],
)
def test_run_budget(
    own: float | None, caps: MonthlyCaps, spent: tuple[int, int], expected: Budget
) -> None:
    assert run_budget(own, caps, spent, "o/r", "p") == expected
