"""The router every handler registers on; handlers get a `Delivery` (see `app.services`)."""

from __future__ import annotations

from app.edge.router import Router
from app.services import Delivery

router: Router[Delivery] = Router()
"""Handlers register here (see the modules of `app.conversation.handlers`)."""
