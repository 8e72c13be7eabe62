"""`trimo doctor` for a deployment: Redis reachable and persistent, a runner online for each
label in use, the webhook secret, and the App's credentials as GitHub (the stand-in) judges
them. The checks are pure functions, tested on facts; then the command on real processes."""

from __future__ import annotations

import asyncio
import io
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import docker
import pytest
import redis

from app.github.client import AppIdentity
from app.ops.doctor import AppFacts, app_checks, choose_sides
from runner import __version__, contract, registry
from runner.container import SANDBOX_VERSION
from runner.doctor import (
    Check,
    EndpointFacts,
    RedisFacts,
    endpoint_checks,
    image_checks,
    label_checks,
    preview_checks,
    redis_checks,
    version_checks,
)
from runner.network.proxyimage import PROXY_IMAGE, PROXY_VERSION
from runner.registry import ImageInfo, RunnerInfo
from tests.fakegithub import RunningFakeGitHub, generate_key_pair
from tests.redis_servers import RedisProcess
from tests.runner_helpers import RunnerProcess

TRIMO = [sys.executable, "-m", "app.ops.cli"]


def marks(checks: list[Check]) -> list[str]:
    return [check.mark for check in checks]


@pytest.mark.parametrize(
    ("facts", "expected", "says"),
    [
        (RedisFacts("r", error="ConnectionError: refused"), ["fail"], "not reachable at r"),
        (RedisFacts("r", version="7", aof=True, appendfsync="always", save=""), ["ok", "ok"], ""),
        (RedisFacts("r", version="7", save="3600 1"), ["ok", "warn"], "snapshots only"),
        (RedisFacts("r", version="7", save=""), ["ok", "fail"], "keeps nothing on disk"),
        (RedisFacts("r", version="7", save=None), ["ok", "warn"], "CONFIG is refused"),
        (
            RedisFacts("r", version="7", aof=True, save="", maxmemory_policy="allkeys-lru"),
            ["ok", "ok", "fail"],
            "may drop queued runs",
        ),
    ],
)
def test_redis_checks(facts: RedisFacts, expected: list[str], says: str) -> None:
    checks = redis_checks(facts)
    assert marks(checks) == expected
    assert says in " ".join(check.what for check in checks)


def runner_info(runner_id: str, *labels: str) -> RunnerInfo:
    now = registry.now()
    return RunnerInfo(
        id=runner_id,
        host="h",
        labels=list(labels),
        capacity=2,
        running=[],
        version="0",
        pid=1,
        started_at=now,
        seen_at=now,
    )


def test_label_checks() -> None:
    assert marks(label_checks({"default": 3}, {"default"}, [])) == ["fail"]
    runners = [runner_info("m1", "default", "gpu"), runner_info("m2", "default")]
    checks = label_checks({"gpu": 2, "arm": 1, "idle": 0}, {"default", "docs"}, runners)
    by_label = {check.what.split(":")[0]: check for check in checks}
    assert by_label["label default"].mark == "ok"
    assert "2 runner(s) online (m1, m2)" in by_label["label default"].what
    assert by_label["label gpu"].what.endswith("(m1), 2 runs queued")
    assert by_label["label arm"].mark == "fail" and "1 run queued" in by_label["label arm"].what
    assert by_label["label docs"].mark == "warn"  # in use, nothing waiting
    assert "label idle" not in by_label


def test_label_checks_before_this_machines_runner_starts() -> None:
    """`trimo runner install` checks before the unit starts the runner: its own labels are
    not missing a runner; the others still are."""
    starting = label_checks({"default": 1, "arm": 1}, {"docs"}, [], starting=["default"])
    assert marks(starting) == ["info", "fail", "info", "warn"]
    assert "label default: this machine's runner, once started, 1 run queued" in starting[2].what
    with_others = label_checks({}, {"gpu"}, [runner_info("m1", "default")], starting=["gpu"])
    assert marks(with_others) == ["info"]


def agent(name: str, image_id: str = "", version: str = SANDBOX_VERSION) -> ImageInfo:
    return ImageInfo(name=name, role="agent", id=image_id, version=version if image_id else "")


EGRESS = ImageInfo(name=PROXY_IMAGE, role="egress", id="sha256:e9", version=PROXY_VERSION)


def with_images(runner_id: str, images: list[ImageInfo] | None) -> RunnerInfo:
    return runner_info(runner_id, "default").model_copy(update={"images": images})


def test_image_checks() -> None:
    fresh = with_images("m1", [agent("trimo-agent:latest", "sha256:aaaa1111bbbb2222"), EGRESS])
    checks = image_checks([fresh])
    assert marks(checks) == ["ok"]
    assert checks[0].what == (
        f"runner m1 on h has its images: trimo-agent:latest aaaa1111bbbb, {PROXY_IMAGE} e9"
    )

    old = with_images("m2", [agent("trimo-agent:latest", "sha256:0ld", version="2"), EGRESS])
    [check] = image_checks([old])
    assert check.mark == "fail"
    assert "runner m2 on h has an outdated image trimo-agent:latest (sandbox 2" in check.what
    assert check.fix == "rebuild it on h with `trimo image build --tag trimo-agent:latest`"

    missing = with_images("m3", [agent("trimo-agent:latest"), agent("team/agent:1", "sha256:t")])
    [check] = image_checks([missing])
    assert (
        check.mark == "fail"
        and check.what == "runner m3 on h is missing the image trimo-agent:latest"
    )

    no_proxy = with_images("m4", [agent("trimo-agent:latest", "sha256:aaaa1111bbbb2222"),
                                  ImageInfo(name=PROXY_IMAGE, role="egress")])  # fmt: skip
    assert marks(image_checks([no_proxy])) == ["ok", "info"]

    assert marks(image_checks([with_images("m5", None)])) == ["warn"]  # an older runner
    assert marks(image_checks([with_images("m6", [])])) == ["warn"]  # Docker did not answer

    other_build = with_images("m7", [agent("trimo-agent:latest", "sha256:cccc3333dddd4444")])
    *_, note = image_checks([fresh, other_build])
    assert note.mark == "info"
    assert note.what == (
        "the runners have different builds of trimo-agent:latest: "
        "aaaa1111bbbb on m1; cccc3333dddd on m7"
    )


def test_preview_checks() -> None:
    assert preview_checks("https://trimo.example.com", {}) == []
    checks = preview_checks(
        "https://Trimo.example.com/",
        {
            "runner same": "https://trimo.example.com:8443",
            "runner hosts": "https://*.previews.example.com",
            "runner around": "https://*.example.com",
            "runner path": "https://previews.example.com",
        },
    )
    by_who = {check.what.split("'")[0].split(" serves")[0]: check for check in checks}
    same = by_who["runner same"]
    assert same.mark == "warn" and "share the host name trimo.example.com" in same.what
    assert "https://*.previews.example.com" in same.fix
    assert by_who["runner hosts"].mark == "ok"
    around = next(c for c in checks if "inside runner around" in c.what)
    assert around.mark == "warn" and "(https://*.example.com)" in around.what
    assert by_who["runner path"].mark == "info" and "one origin" in by_who["runner path"].what
    unknown = preview_checks("", {"runner path": "https://previews.example.com"})
    assert "TRIMO_PUBLIC_URL is not set" in unknown[0].what


def test_app_checks() -> None:
    assert marks(app_checks(AppFacts(configured=False))) == ["info"]
    no_secret = app_checks(AppFacts(configured=True, key_error="no key"))
    assert marks(no_secret) == ["fail", "fail"]
    refused = app_checks(
        AppFacts(configured=True, webhook_secret=True, github_error="HTTP 401", api_url="u")
    )
    assert marks(refused) == ["ok", "fail"] and "HTTP 401" in refused[1].what
    renamed = app_checks(
        AppFacts(
            configured=True,
            webhook_secret=True,
            identity=AppIdentity(id=7, slug="trimo-bot"),
            slug="trimo",
        )
    )
    assert marks(renamed) == ["ok", "ok", "warn"] and "TRIMO_APP_SLUG=trimo-bot" in renamed[2].fix


def test_version_checks() -> None:
    same = runner_info("a", "default").model_copy(update={"version": __version__})
    old = runner_info("b", "default").model_copy(update={"version": "0.0.1", "host": "box"})
    assert marks(version_checks(__version__, [same])) == ["ok"]
    skewed = version_checks(__version__, [same, old])
    assert marks(skewed) == ["warn"]
    assert skewed[0].what == f"runner b on box runs Trimo 0.0.1, this machine {__version__}"
    assert "one version" in skewed[0].fix
    app_old = version_checks(__version__, [same], app_version="0.0.2")
    assert marks(app_old) == ["warn", "ok"]
    assert app_old[0].what == f"the App runs Trimo 0.0.2, this machine {__version__}"
    assert version_checks(__version__, [], app_version=__version__) == []


@pytest.mark.parametrize(
    ("flags", "app_set", "runner_set", "expected"),
    [
        ((False, False), True, False, (True, False)),  # the App's container
        ((False, False), False, True, (False, True)),  # a runner machine
        ((False, False), False, False, (False, True)),  # `trimo run` on a laptop
        ((False, False), True, True, (True, True)),  # `trimo up`
        ((True, False), False, True, (True, False)),
        ((False, True), True, False, (False, True)),
        ((True, True), False, False, (True, True)),
    ],
)
def test_doctor_chooses_its_side_from_the_environment(
    flags: tuple[bool, bool], app_set: bool, runner_set: bool, expected: tuple[bool, bool]
) -> None:
    sides = choose_sides(*flags, app_configured=app_set, runner_configured=runner_set)
    assert (sides.app, sides.runner) == expected and sides.why


@pytest.mark.docker
def test_doctor_checks_the_side_it_is_asked_for(tmp_path: Path, test_image: str) -> None:
    """Redis unreachable (port 1) keeps each run short; the sections say which side ran."""
    base = {"TRIMO_REDIS_URL": "redis://127.0.0.1:1/0", "TRIMO_GITHUB_APP_ID": "1"}
    app = doctor(tmp_path, base)
    runner = doctor(tmp_path, base, "--runner")
    both = doctor(tmp_path, {**base, "TRIMO_RUNNER_ID": "box-1"})
    for result in (app, runner, both):
        assert "Traceback" not in result.stdout + result.stderr
        assert "✗ Redis is not reachable" in result.stdout and result.returncode == 1
    assert "This machine" not in app.stdout and "The GitHub App" in app.stdout
    assert "This machine" in runner.stdout and "The GitHub App" not in runner.stdout
    assert "git is installed" in runner.stdout
    assert "This machine" in both.stdout and "The GitHub App" in both.stdout
    assert "TRIMO_GITHUB_APP_ID and TRIMO_RUNNER_* are set here" in both.stdout
    broken = doctor(tmp_path, {**base, "TRIMO_GITHUB_APP_ID": "[not] a number"})
    assert "✗ the App's settings are invalid" in broken.stdout, broken.stdout + broken.stderr
    assert broken.returncode == 1 and "Traceback" not in broken.stdout + broken.stderr


def doctor(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRIMO_")}
    return subprocess.run(
        [*TRIMO, "doctor", *args],
        cwd=tmp_path,
        env={
            **clean,
            "TRIMO_CACHE_DIR": str(tmp_path / "cache"),
            "TRIMO_IMAGE": "trimo-agent:base",
            "COLUMNS": "300",
            "TERM": "dumb",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )


async def announce(url: str, info: RunnerInfo) -> None:
    client = redis.asyncio.Redis.from_url(url)
    try:
        await registry.announce(client, info)
    finally:
        await client.aclose()


@pytest.mark.docker
@pytest.mark.redis
def test_doctor_checks_a_deployment(tmp_path: Path, test_image: str) -> None:
    password = "doctor-pw-5e1f"
    server = RedisProcess(
        tmp_path / "redis",
        ["--appendonly", "yes", "--appendfsync", "always", "--requirepass", password],
    )
    server.start(ready=lambda: server_answers(server.port, password))
    try:
        url = f"redis://:{password}@127.0.0.1:{server.port}/0"
        info = runner_info("doc-runner", "default")
        info.preview_url = "https://trimo.example.com:8443"
        asyncio.run(announce(url, info))
        client = redis.Redis(port=server.port, password=password)
        client.zadd(contract.run_queue("gpu"), {"queued-run": 1})
        with RunningFakeGitHub() as gh:
            creds = gh.install_app("octo-org")
            app_env = {
                "TRIMO_REDIS_URL": url,
                "TRIMO_GITHUB_APP_ID": str(creds.app_id),
                "TRIMO_GITHUB_PRIVATE_KEY": creds.private_key_pem,
                "TRIMO_GITHUB_API_URL": gh.api_url,
                "TRIMO_WEBHOOK_SECRET": "s3cret",
                "TRIMO_PUBLIC_URL": "https://trimo.example.com",
            }
            good = doctor(tmp_path, app_env)
            wrong_key = doctor(
                tmp_path,
                {**app_env, "TRIMO_GITHUB_PRIVATE_KEY": generate_key_pair()[0]},
            )
            app_slug = gh.state.app.slug if gh.state.app else ""
        client.close()
    finally:
        server.stop()

    out = good.stdout
    # The App's side only (as in the App's container): no git, Docker or cache checks.
    assert "Checking the App (TRIMO_GITHUB_APP_ID is set here" in out
    assert "This machine" not in out and "Docker" not in out
    assert f"! runner doc-runner on h runs Trimo 0, this machine {__version__}" in out
    assert "✓ Redis 7" in out and f"reachable at redis://127.0.0.1:{server.port}/0" in out
    assert "✓ Redis keeps every write in its append-only file (appendfsync always)" in out
    assert "✓ label default: 1 runner(s) online (doc-runner)" in out
    assert "✗ label gpu: no runner online, 1 run queued" in out
    assert "→ start a runner with gpu in TRIMO_RUNNER_LABELS" in out
    assert "! runner doc-runner's previews share the host name trimo.example.com" in out
    assert "✓ the webhook secret is set" in out
    assert f"✓ GitHub accepts the App's credentials: {app_slug} (id {creds.app_id})" in out
    assert "1 problem(s) to fix." in out and good.returncode == 1
    assert password not in out + good.stderr

    assert "✗ GitHub did not accept the App's credentials" in wrong_key.stdout
    assert "HTTP 401" in wrong_key.stdout
    assert "Traceback" not in wrong_key.stdout + wrong_key.stderr


def server_answers(port: int, password: str) -> bool:
    try:
        return bool(redis.Redis(port=port, password=password, socket_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.mark.docker
def test_doctor_without_redis_says_so_without_a_traceback(tmp_path: Path, test_image: str) -> None:
    result = doctor(tmp_path, {"TRIMO_REDIS_URL": "redis://:hunter2@127.0.0.1:1/0"})
    assert "✗ Redis is not reachable at redis://127.0.0.1:1/0" in result.stdout
    assert "Runners" not in result.stdout  # nothing to say about runners without Redis
    assert "hunter2" not in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert result.returncode == 1


@pytest.mark.docker
@pytest.mark.redis
def test_doctor_names_the_runner_with_an_old_or_missing_image(
    tmp_path: Path, redis_url: str, docker_client: docker.DockerClient, test_image: str
) -> None:
    suffix = secrets.token_hex(3)
    old, missing = f"trimo-test-old-{suffix}:1", f"trimo-test-missing-{suffix}:1"
    dockerfile = f'FROM {test_image}\nLABEL dev.trimo.sandbox="2"\n'
    docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=old, rm=True)
    fresh_id, stale_id = f"doc-fresh-{suffix}", f"doc-stale-{suffix}"
    runners = [
        RunnerProcess(redis_url, tmp_path / "cache-fresh", fresh_id, "default",
                      TRIMO_RUNNER_ALLOWED_IMAGES=test_image),
        RunnerProcess(redis_url, tmp_path / "cache-stale", stale_id, "default",
                      TRIMO_RUNNER_ALLOWED_IMAGES=f"{old},{missing}"),
    ]  # fmt: skip
    try:
        for runner in runners:
            runner.start()
        with redis.Redis.from_url(redis_url) as client:
            client.set(contract.APP_VERSION, "0.0.2")  # an older App
        result = doctor(tmp_path, {"TRIMO_REDIS_URL": redis_url})
    finally:
        for runner in runners:
            if runner.proc is not None:
                runner.terminate()
        docker_client.images.remove(old, force=True)

    out, host = result.stdout, socket.gethostname()
    assert f"✓ runner {fresh_id} on {host} has its images: {test_image} " in out
    assert f"! the App runs Trimo 0.0.2, this machine {__version__}" in out
    assert (
        f"✗ runner {stale_id} on {host} has an outdated image {old} (sandbox 2; this Trimo "
        f"needs sandbox {SANDBOX_VERSION}): its runs fail"
    ) in out
    assert f"→ rebuild it on {host} with `trimo image build --tag {old}`" in out
    assert f"✗ runner {stale_id} on {host} is missing the image {missing}" in out
    assert "3 problem(s) to fix." in out  # and the test's Redis, which keeps nothing on disk
    assert result.returncode == 1


CODEX_GATEWAY = """\
model_provider = "gw"
[model_providers.gw]
base_url = "http://10.0.0.7:4000/v1"
env_key = "OPENAI_API_KEY"
"""


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (EndpointFacts(), [("info", "agents call their vendors' APIs")]),
        (
            EndpointFacts(anthropic_base_url="https://gw.example.com/anthropic"),
            [("ok", "gw.example.com:443 joins their allowlist")],
        ),
        (
            EndpointFacts(codex_config_file="/etc/c.toml", codex_config=CODEX_GATEWAY),
            [("ok", "10.0.0.7:4000 join its allowlist")],
        ),
        (
            EndpointFacts(codex_config_file="/etc/c.toml", codex_error="No such file"),
            [("fail", "cannot be read: No such file")],
        ),
        (
            EndpointFacts(codex_config_file="/etc/c.toml", codex_config="model = "),
            [("fail", "not valid TOML")],
        ),
        (
            EndpointFacts(codex_config_file="/etc/c.toml", codex_config='model = "m"'),
            [("warn", "no model provider with a base_url")],
        ),
        (
            EndpointFacts(
                codex_config_file="/etc/c.toml",
                codex_config=CODEX_GATEWAY.replace("OPENAI_API_KEY", "AZURE_KEY"),
            ),
            [("ok", "10.0.0.7:4000"), ("warn", "env_key is AZURE_KEY, which no run is given")],
        ),
    ],
)
def test_endpoint_checks(facts: EndpointFacts, expected: list[tuple[str, str]]) -> None:
    checks = endpoint_checks(facts)
    assert len(checks) == len(expected), checks
    for check, (mark, part) in zip(checks, expected, strict=True):
        assert check.mark == mark and part in check.what, check
