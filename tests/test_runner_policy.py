"""Runner-side policy: what a runner refuses, whatever the App asks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runner.policy import RunnerPolicy, refusal
from tests.engine_helpers import make_request


@pytest.mark.parametrize(
    ("policy", "overrides", "expected"),
    [
        (RunnerPolicy(), {}, None),
        (RunnerPolicy(allowed_repos=["local/*"]), {}, None),
        (RunnerPolicy(allowed_repos=["acme/*"]), {}, "does not run jobs for local/sample"),
        (RunnerPolicy(allowed_images=["trimo-agent:base"]), {}, None),
        (
            RunnerPolicy(allowed_images=["trimo-agent:latest"]),
            {},
            "does not run the image trimo-agent:base",
        ),
        (RunnerPolicy(allowed_networks=["none"]), {"network": "bridge"}, "network 'bridge'"),
        (RunnerPolicy(max_timeout_minutes=10), {"timeout_s": 600}, None),
        (RunnerPolicy(max_timeout_minutes=10), {"timeout_s": 601}, "at most 10 minutes"),
    ],
)
def test_refusal(policy: RunnerPolicy, overrides: dict[str, Any], expected: str | None) -> None:
    request = make_request(Path("/nonexistent"), "true", **overrides)
    reason = refusal(request, policy)
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and expected in reason
