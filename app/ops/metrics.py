"""The figures this process observes, for `/metrics` (`app.ops.scrape` adds Redis's).

Webhooks received, events handled and GitHub calls are counted where they happen (the web
edge, the event worker, the GitHub client); `trimo serve` runs all three in one process,
so its `/metrics` covers them.
"""

from __future__ import annotations

from typing import Final

import httpx
from prometheus_client import CollectorRegistry, Counter, Histogram

from app.edge.events import HANDLED_EVENTS, PING_EVENT

KNOWN_EVENTS: Final = frozenset({PING_EVENT} | {event for event, _action in HANDLED_EVENTS})

REGISTRY: Final = CollectorRegistry()
"""This process's own figures."""

WEBHOOKS: Final = Counter(
    "trimo_webhooks",
    "Webhook deliveries received by the web edge, by event and outcome.",
    ["event", "outcome"],
    registry=REGISTRY,
)
WEBHOOK_SECONDS: Final = Histogram(
    "trimo_webhook_response_seconds",
    "Time the web edge took to answer a delivery.",
    ["event"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
EVENTS: Final = Counter(
    "trimo_events_handled",
    "Deliveries the event worker handled, by event and outcome.",
    ["event", "outcome"],
    registry=REGISTRY,
)
EVENT_SECONDS: Final = Histogram(
    "trimo_event_handling_seconds",
    "Time the event worker took on one try of a delivery.",
    ["event"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
    registry=REGISTRY,
)
GITHUB_REQUESTS: Final = Counter(
    "trimo_github_requests",
    "Requests to GitHub's API answered, by method and status class.",
    ["method", "status"],
    registry=REGISTRY,
)
GITHUB_SENT: Final = Counter(
    "trimo_github_requests_sent",
    "Requests sent to GitHub's API, by method (those without an answer are the difference).",
    ["method"],
    registry=REGISTRY,
)
SCRAPE_ERRORS: Final = Counter(
    "trimo_scrape_errors",
    "Scrapes that left out the figures kept in Redis (Redis unreachable, slow or failing).",
    registry=REGISTRY,
)


def event_label(event: str | None) -> str:
    """The `event` label: a known event's name, else `other` (the label set stays small)."""
    return event if event in KNOWN_EVENTS else "other"


def observe_webhook(event: str | None, outcome: str, seconds: float) -> None:
    WEBHOOKS.labels(event_label(event), outcome).inc()
    WEBHOOK_SECONDS.labels(event_label(event)).observe(seconds)


def observe_event(event: str, outcome: str, seconds: float) -> None:
    EVENTS.labels(event_label(event), outcome).inc()
    EVENT_SECONDS.labels(event_label(event)).observe(seconds)


_METHODS: Final = frozenset({"GET", "POST", "PATCH", "PUT", "DELETE"})


def _method(request: httpx.Request) -> str:
    return request.method if request.method in _METHODS else "other"


async def count_github_request(request: httpx.Request) -> None:
    """httpx request hook on the App's GitHub client."""
    GITHUB_SENT.labels(_method(request)).inc()


async def count_github_response(response: httpx.Response) -> None:
    """httpx response hook on the App's GitHub client."""
    GITHUB_REQUESTS.labels(_method(response.request), f"{response.status_code // 100}xx").inc()
