"""A tiny router: one handler per (event, action), registered with a decorator.

Unknown pairs are ignored; `ANY_ACTION` registers a handler for every action of an event
that has no handler of its own for that action.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from app.edge.events import ANY_ACTION

C = TypeVar("C")
Handler = Callable[[C], Awaitable[None]]


class Router(Generic[C]):
    """Maps (event, action) to an async handler taking a context of type `C`."""

    def __init__(self) -> None:
        self._handlers: dict[tuple[str, str], Handler[C]] = {}

    def on(self, event: str, *actions: str) -> Callable[[Handler[C]], Handler[C]]:
        """Register the decorated handler for `event` with each of `actions`."""
        if not actions:
            raise ValueError(f"register {event!r} with at least one action (or ANY_ACTION)")

        def register(handler: Handler[C]) -> Handler[C]:
            for action in actions:
                key = (event, action)
                if key in self._handlers:
                    raise ValueError(f"{event}.{action} already has a handler")
                self._handlers[key] = handler
            return handler

        return register

    def handler_for(self, event: str, action: str | None) -> Handler[C] | None:
        """The handler of `event.action`, else the event's catch-all, else None."""
        if action is not None and action != ANY_ACTION:
            handler = self._handlers.get((event, action))
            if handler is not None:
                return handler
        return self._handlers.get((event, ANY_ACTION))

    def routes(self) -> frozenset[tuple[str, str]]:
        """Every registered (event, action) pair."""
        return frozenset(self._handlers)

    async def dispatch(self, event: str, action: str | None, context: C) -> bool:
        """Run the handler for `event.action` with `context`; False when there is none."""
        handler = self.handler_for(event, action)
        if handler is None:
            return False
        await handler(context)
        return True
