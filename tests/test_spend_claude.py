"""A run's budget with the real Claude Code CLI of the full image, against the local stand-in
of Anthropic's API (tests/api_standins.py): Claude is given the budget itself
(`--max-budget-usd`), and the runner stops the run once the cost Claude reports reaches it;
a budget above the cost changes nothing."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest

from runner.job import Outcome
from tests.api_standins import bridge_gateway, serve
from tests.engine_helpers import run
from tests.test_agent_clis import KEY, agent_image, diagnosis, request_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]

__all__ = ["agent_image"]  # the fixture, shared with test_agent_clis


def test_claude_code_within_and_past_its_budget(
    docker_client: docker.DockerClient, agent_image: str, sample_repo: Path, tmp_path: Path
) -> None:
    with serve(bridge_gateway(docker_client)) as api:
        operator = {"anthropic_base_url": api.url}
        secrets = {"ANTHROPIC_API_KEY": KEY}
        roomy = request_for(sample_repo, "claude", agent_image, secrets).model_copy(
            update={"max_cost_usd": 50.0}
        )
        finished, recorder = run(tmp_path / "a", roomy, **operator)
        assert finished.outcome == Outcome.SUCCESS, diagnosis(finished, recorder, api)
        cost = finished.usage.cost_usd if finished.usage else None
        assert cost is not None and 0 < cost < 0.01, cost

        tight = request_for(sample_repo, "claude", agent_image, secrets).model_copy(
            update={"max_cost_usd": cost / 2, "pipeline": "p2", "branch": "trimo/p2"}
        )
        stopped, recorder = run(tmp_path / "b", tight, **operator)
    assert stopped.outcome == Outcome.CANCELLED, diagnosis(stopped, recorder, api)
    assert stopped.reason == f"budget: ${cost:.4f} of ${cost / 2:.4f}"
