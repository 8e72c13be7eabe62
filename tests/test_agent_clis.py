"""The agent CLIs of the full image, started as the agent the way Trimo starts them.

Each CLI first shows it starts as uid 1000 with a fresh, empty home bind-mounted at
/home/agent (as the runner mounts a pipeline's home), and leaves that home the agent's.
Then each runs through the real engine, with the command its adapter builds, against a
local stand-in of its model API (`tests/api_standins.py`) on this host: the run succeeds
and the adapter turns the CLI's real output into a message, a result and usage that match
what the stand-in answered. Claude Code and Codex reach it as an operator's gateway would
be reached (TRIMO_ANTHROPIC_BASE_URL, TRIMO_CODEX_CONFIG_FILE) on network `allowlist`,
through the egress proxy, although the stand-in is on a private address; so does aider.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import docker
import pytest

from runner import images
from runner.container import AgentContainer, ContainerSpec
from runner.events import AssistantMessage, FinalResult, Usage
from runner.job import Outcome, Resources, RunFinished, RunRequest
from tests.api_standins import INPUT_TOKENS, OUTPUT_TOKENS, REPLY, StandIn, bridge_gateway, serve
from tests.conftest import build_lock
from tests.engine_helpers import Recorder, make_request, record_of, run

pytestmark = [pytest.mark.docker, pytest.mark.slow]

AGENT_IMAGE = "trimo-agent:latest"
AGENT_UID = 1000
PROMPT = "Say hello to the stand-in."
KEY = "sk-standin-0123456789abcdef"
RESOURCES = Resources(memory="2g", cpus=1.0, pids=512)
VERSIONS = {
    "claude": r"^\d+\.\d+\.\d+ \(Claude Code\)$",
    "codex": r"^codex-cli \d+\.\d+\.\d+$",
    "aider": r"^aider \d+\.\d+\.\d+$",
}


@pytest.fixture(scope="module")
def agent_image(docker_client: docker.DockerClient) -> str:
    """The full image from the current Dockerfile (cached: well under a second when unchanged)."""
    with build_lock(AGENT_IMAGE):
        images.build_image(
            docker_client,
            AGENT_IMAGE,
            target="agent",
            ca_certs=images.host_extra_cas(),
            on_line=lambda _line: None,
        )
    return AGENT_IMAGE


def agent_dir(path: Path, mode: int = 0o700) -> Path:
    path.mkdir(mode=mode, parents=True)
    os.chown(path, AGENT_UID, AGENT_UID)
    return path


def not_the_agents(home: Path) -> list[str]:
    """Paths in `home` (itself included) not owned by the agent, without following links."""
    found = [home, *home.rglob("*")]
    return [str(p) for p in found if os.lstat(p).st_uid != AGENT_UID]


def test_the_image_leaves_nothing_of_roots_in_the_agents_home(
    docker_client: docker.DockerClient, agent_image: str
) -> None:
    """What the image keeps at /home/agent (seen when no home is mounted) is the agent's."""
    output: bytes = docker_client.containers.run(
        agent_image,
        ["bash", "-c", "id -u; find /home/agent ! -user agent -print"],
        remove=True,
        network_mode="none",
    )
    assert output.decode().split() == [str(AGENT_UID)]


@pytest.mark.parametrize("cli", sorted(VERSIONS))
def test_the_cli_starts_as_the_agent_with_a_fresh_empty_home(
    docker_client: docker.DockerClient, agent_image: str, tmp_path: Path, cli: str
) -> None:
    home = agent_dir(tmp_path / "home")
    spec = ContainerSpec(
        image=agent_image,
        command=[cli, "--version"],
        workspace=agent_dir(tmp_path / "workspace", 0o755),
        context_dir=agent_dir(tmp_path / "io", 0o755),
        out_dir=agent_dir(tmp_path / "io" / "out"),
        home=home,
        user=f"{AGENT_UID}:{AGENT_UID}",
        network="none",
        resources=RESOURCES,
    )
    container = AgentContainer(docker_client, spec)
    try:
        container.start()
        lines = [line for line in container.lines() if line.strip()]
        exit_info = container.wait(timeout=120)
    finally:
        container.remove()
    assert exit_info.exit_code == 0, lines
    assert lines and re.match(VERSIONS[cli], lines[-1].strip()), lines
    assert not_the_agents(home) == []


# -- a first run of each CLI against a stand-in of its API, through the engine ----------


def request_for(sample_repo: Path, agent: str, image: str, secrets: dict[str, str]) -> RunRequest:
    return make_request(
        sample_repo,
        PROMPT,
        agent=agent,
        image=image,
        network="allowlist",
        timeout_s=180,
        resources=RESOURCES,
        secrets=secrets,
    )


def diagnosis(finished: RunFinished, recorder: Recorder, api: StandIn) -> str:
    return f"{finished.outcome} {finished.reason!r}\n{recorder.text()}\napi: {api.seen()}"


def assert_first_run_parsed(
    finished: RunFinished, recorder: Recorder, api: StandIn, model: str, final_result: bool
) -> None:
    """The run succeeded, and the adapter read the stand-in's answer out of the CLI's output."""
    why = diagnosis(finished, recorder, api)
    assert finished.outcome == Outcome.SUCCESS, why
    agent = recorder.events
    messages = [e.text.strip() for e in agent if isinstance(e, AssistantMessage)]
    assert REPLY in messages, why
    usages = [e for e in agent if isinstance(e, Usage)]
    assert sum(u.input_tokens for u in usages) == INPUT_TOKENS, usages
    assert sum(u.output_tokens for u in usages) == OUTPUT_TOKENS, usages
    assert model in {u.model for u in usages}, usages
    total = finished.usage  # the run's own sum of its Usage events
    assert total is not None, why
    assert (total.model, total.input_tokens, total.output_tokens) == (
        model,
        INPUT_TOKENS,
        OUTPUT_TOKENS,
    )
    results = [e for e in agent if isinstance(e, FinalResult)]
    if final_result:
        assert [(r.success, r.text) for r in results] == [(True, REPLY)], why


def the_call(api: StandIn, route: str) -> tuple[dict[str, str], str, str]:
    """Headers, model and whole body of the one model call the CLI made on `route`."""
    calls = api.to(route)
    assert len(calls) == 1, api.seen()
    body = calls[0].body or {}
    model = body.get("model")
    assert isinstance(model, str) and model, body
    return calls[0].headers, model, json.dumps(body)


def test_claude_code_first_run_and_follow_up_against_a_standin_of_the_messages_api(
    docker_client: docker.DockerClient, agent_image: str, sample_repo: Path, tmp_path: Path
) -> None:
    """Claude Code streams from ANTHROPIC_BASE_URL (SSE), and its stream-json becomes events.
    A follow-up continues the session (`--continue`), whose result's total_cost_usd is the
    session's: each run reports its own cost, the same for the same calls."""
    cache = tmp_path / "cache"
    with serve(bridge_gateway(docker_client)) as api:
        secrets = {"ANTHROPIC_API_KEY": KEY}
        operator = {"anthropic_base_url": api.url}  # TRIMO_ANTHROPIC_BASE_URL
        first = request_for(sample_repo, "claude", agent_image, secrets)
        finished, recorder = run(cache, first, **operator)
        assert finished.outcome == Outcome.SUCCESS, diagnosis(finished, recorder, api)
        headers, model, body = the_call(api, "/v1/messages")
        assert headers.get("x-api-key") == KEY
        assert PROMPT in body
        assert json.loads(body).get("stream") is True
        assert_first_run_parsed(finished, recorder, api, model, final_result=True)
        assert recorder.of_type("error") == [], recorder.text()
        follow = request_for(sample_repo, "claude", agent_image, secrets).model_copy(
            update={"prompt": "And again.", "history": [record_of(first, finished)]}
        )
        again, recorder_again = run(cache, follow, **operator)
    assert again.outcome == Outcome.SUCCESS, diagnosis(again, recorder_again, api)
    calls = api.to("/v1/messages")
    assert len(calls) == 2 and PROMPT in json.dumps(calls[1].body), "not the same session"
    costs = [r.usage.cost_usd if r.usage else None for r in (finished, again)]
    assert costs[0] is not None and costs[0] > 0, costs
    assert costs[1] == pytest.approx(costs[0]), costs  # not the session's total, twice this


CODEX_CONFIG = """\
model_provider = "standin"

[model_providers.standin]
name = "Stand-in"
base_url = "{url}/v1"
env_key = "CODEX_API_KEY"
wire_api = "responses"
http_headers = {{ "X-Gateway-Token" = "{token}" }}
"""
GATEWAY_TOKEN = "gw-token-0123456789abcdef"


def test_codex_first_run_through_a_provider_of_the_operators_config(
    docker_client: docker.DockerClient, agent_image: str, sample_repo: Path, tmp_path: Path
) -> None:
    """Codex takes its base URL from a model provider in config.toml (it ignores
    OPENAI_BASE_URL): the operator's TRIMO_CODEX_CONFIG_FILE, copied into the run's own
    CODEX_HOME. Its key comes from CODEX_API_KEY, which Trimo's launcher sets from
    OPENAI_API_KEY. Its `exec --json` stream becomes events, with the model named."""
    config = tmp_path / "config.toml"
    with serve(bridge_gateway(docker_client)) as api:
        config.write_text(CODEX_CONFIG.format(url=api.url, token=GATEWAY_TOKEN))
        request = request_for(sample_repo, "codex", agent_image, {"OPENAI_API_KEY": KEY})
        finished, recorder = run(tmp_path / "cache", request, codex_config_file=config)
    assert finished.outcome == Outcome.SUCCESS, diagnosis(finished, recorder, api)
    headers, model, body = the_call(api, "/v1/responses")
    assert headers.get("authorization") == f"Bearer {KEY}"
    assert headers.get("x-gateway-token") == GATEWAY_TOKEN  # the whole config was used
    assert PROMPT in body
    assert_first_run_parsed(finished, recorder, api, model, final_result=True)
    assert recorder.of_type("error") == [], recorder.text()


@pytest.mark.parametrize(
    ("provider", "route"),
    [("anthropic", "/v1/messages"), ("openai", "/v1/chat/completions")],
)
def test_aider_first_run_against_a_standin_of_its_api(
    docker_client: docker.DockerClient,
    agent_image: str,
    sample_repo: Path,
    tmp_path: Path,
    provider: str,
    route: str,
) -> None:
    """Aider (through LiteLLM) takes ANTHROPIC_BASE_URL or OPENAI_API_BASE; its plain-text
    reply and its `Tokens: … Cost: …` line become a message and usage. The stand-in is a
    gateway serving both formats on one host (as LiteLLM does), named by
    TRIMO_ANTHROPIC_BASE_URL: the operator's, so the proxy lets it through."""
    with serve(bridge_gateway(docker_client)) as api:
        secrets = (
            {"ANTHROPIC_API_KEY": KEY}
            if provider == "anthropic"
            else {"OPENAI_API_KEY": KEY, "OPENAI_API_BASE": f"{api.url}/v1"}
        )
        request = request_for(sample_repo, "aider", agent_image, secrets)
        finished, recorder = run(tmp_path / "cache", request, anthropic_base_url=api.url)
    assert finished.outcome == Outcome.SUCCESS, diagnosis(finished, recorder, api)
    headers, model, body = the_call(api, route)
    sent_key = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ")
    assert sent_key == KEY
    assert PROMPT in body
    assert_first_run_parsed(finished, recorder, api, model, final_result=False)
