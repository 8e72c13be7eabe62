"""A run's network: `none`, `bridge`, or `allowlist` through a filtering egress proxy."""

from __future__ import annotations

from runner.network.egress import EgressProxy, NetworkAttachment, attach, direct

__all__ = ["EgressProxy", "NetworkAttachment", "attach", "direct"]
