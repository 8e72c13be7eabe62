"""The router: registration, dispatch, catch-all actions; and the App's own routing table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.conversation.handlers import router as app_router
from app.dashboard.requests import DASHBOARD_EVENT
from app.edge.events import ANY_ACTION, HANDLED_EVENTS, VERIFY_EVENT, is_handled
from app.edge.router import Router


def make_router(calls: list[str]) -> Router[str]:
    router: Router[str] = Router()

    def recorder(name: str):  # type: ignore[no-untyped-def]
        async def handler(context: str) -> None:
            calls.append(f"{name}:{context}")

        return handler

    router.on("issues", "labeled")(recorder("labeled"))
    router.on("issues", "closed", "reopened")(recorder("closed-or-reopened"))
    router.on("installation", ANY_ACTION)(recorder("installation-any"))
    router.on("installation", "deleted")(recorder("installation-deleted"))
    return router


@pytest.mark.parametrize(
    ("event", "action", "expected"),
    [
        ("issues", "labeled", "labeled:ctx"),
        ("issues", "closed", "closed-or-reopened:ctx"),
        ("issues", "reopened", "closed-or-reopened:ctx"),
        ("installation", "deleted", "installation-deleted:ctx"),
        ("installation", "created", "installation-any:ctx"),
        ("installation", "suspend", "installation-any:ctx"),
        ("installation", None, "installation-any:ctx"),
        ("issues", "opened", None),
        ("issues", None, None),
        ("issues", ANY_ACTION, None),
        ("pull_request", "labeled", None),
        ("push", None, None),
    ],
)
async def test_dispatch(event: str, action: str | None, expected: str | None) -> None:
    calls: list[str] = []
    router = make_router(calls)
    handled = await router.dispatch(event, action, "ctx")
    assert handled is (expected is not None)
    assert calls == ([expected] if expected else [])


def test_routes_lists_every_registration() -> None:
    router = make_router([])
    assert router.routes() == {
        ("issues", "labeled"),
        ("issues", "closed"),
        ("issues", "reopened"),
        ("installation", ANY_ACTION),
        ("installation", "deleted"),
    }


def test_a_pair_has_one_handler() -> None:
    router = make_router([])

    async def other(context: str) -> None:
        pass

    with pytest.raises(ValueError, match=r"issues\.labeled already has a handler"):
        router.on("issues", "labeled")(other)
    with pytest.raises(ValueError, match="at least one action"):
        router.on("issues")


async def test_handler_errors_propagate() -> None:
    router: Router[int] = Router()

    @router.on("issues", "labeled")
    async def boom(context: int) -> None:
        raise RuntimeError(f"boom {context}")

    with pytest.raises(RuntimeError, match="boom 7"):
        await router.dispatch("issues", "labeled", 7)


def test_the_app_routes_exactly_what_the_web_edge_queues() -> None:
    routed = app_router.routes()
    for event, action in HANDLED_EVENTS:
        assert (event, action) in routed or (event, ANY_ACTION) in routed, (event, action)
    for event, action in routed:
        if event in (DASHBOARD_EVENT, VERIFY_EVENT):
            assert not is_handled(event, action)  # Trimo queues these itself, never GitHub
            continue
        assert is_handled(event, action) or action == ANY_ACTION, (event, action)


def test_every_corpus_delivery_is_routed_iff_queued(corpora: Path) -> None:
    seen = 0
    for path in sorted((corpora / "webhooks").glob("*.*.*.json")):
        event = path.name.split(".")[0]
        payload = json.loads(path.read_text())
        if not isinstance(payload, dict):
            continue
        action = payload.get("action") if isinstance(payload.get("action"), str) else None
        has_handler = app_router.handler_for(event, action) is not None
        assert has_handler is is_handled(event, action), path.name
        seen += has_handler
    assert seen >= 20
