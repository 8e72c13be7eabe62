"""Webhook handlers, one per (event, action), registered on `router` when imported."""

from app.conversation.handlers import (
    checks,
    closing,
    comments,
    dashboard,
    installations,
    labels,
    previews,
    pulltitles,
)
from app.conversation.handlers.context import router
from app.services import Delivery, Services

__all__ = [
    "Delivery",
    "Services",
    "checks",
    "closing",
    "comments",
    "dashboard",
    "installations",
    "labels",
    "previews",
    "pulltitles",
    "router",
]
