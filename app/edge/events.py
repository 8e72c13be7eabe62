"""Which GitHub webhook (event, action) pairs Trimo handles; everything else is ignored."""

from __future__ import annotations

from typing import Final

ANY_ACTION: Final = "*"
PING_EVENT: Final = "ping"

HANDLED_EVENTS: Final[frozenset[tuple[str, str]]] = frozenset(
    {
        ("issue_comment", "created"),
        ("issues", "labeled"),
        ("issues", "closed"),
        ("pull_request_review_comment", "created"),
        ("pull_request", "closed"),
        ("pull_request", "edited"),
        ("check_run", "requested_action"),
        ("check_run", "rerequested"),
        ("check_suite", "completed"),
        ("push", ANY_ACTION),
        ("installation", ANY_ACTION),
        ("installation_repositories", ANY_ACTION),
    }
)
"""(event, action) pairs queued for the App worker; `ANY_ACTION` matches every action."""


VERIFY_EVENT: Final = "trimo_verify"
"""Queued by the App's reporter when a run's checks of `verify:` failed (action `failed`):
the App worker starts the automatic follow-up `verify_fix_attempts` allows. GitHub never
sends it, and the webhook edge never takes it."""


def is_handled(event: str, action: str | None) -> bool:
    """Whether a delivery of `event` with `action` goes to the App worker."""
    if (event, ANY_ACTION) in HANDLED_EVENTS:
        return True
    return action is not None and action != ANY_ACTION and (event, action) in HANDLED_EVENTS
