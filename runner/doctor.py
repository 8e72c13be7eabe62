"""`trimo doctor` for a deployment, the runner's part: is Redis reachable and persistent, is a
runner online for every label in use, has each runner the images this Trimo needs (as
its heartbeat says), and where this machine's agents call (the operator's endpoints).
Each check is a pure function of facts gathered first (`gather_redis`), so that it is
tested without a broken deployment at hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from rich.console import Console
from rich.text import Text

from runner import contract, redisurl, registry
from runner.agents.endpoints import CODEX_KEY_ENV, endpoint_of, read_codex_config
from runner.container import SANDBOX_VERSION
from runner.errors import TrimoError
from runner.network.proxyimage import PROXY_VERSION
from runner.previews.links import Links
from runner.registry import ImageInfo, RunnerInfo

Mark = Literal["ok", "warn", "fail", "info"]
MARKS: dict[Mark, tuple[str, str]] = {
    "ok": ("✓", "green"),
    "warn": ("!", "yellow"),
    "fail": ("✗", "red"),
    "info": ("·", "dim"),
}
BACKUP_HINT = "see deploy/README.md, “Redis”"
HOST_MODE = "TRIMO_RUNNER_PREVIEW_URL=https://*.previews.example.com (README, “Previews”)"
SEPARATE_HOSTS = "the dashboard at trimo.example.com, previews at *.previews.example.com"


@dataclass(frozen=True)
class Check:
    mark: Mark
    what: str
    fix: str = ""


@dataclass(frozen=True)
class RedisFacts:
    where: str
    """TRIMO_REDIS_URL without its password."""
    error: str = ""
    """Why Redis could not be asked; the other fields are then empty."""
    version: str = ""
    aof: bool = False
    appendfsync: str = ""
    save: str | None = None
    """CONFIG GET save; None when Redis refuses CONFIG (managed services often do)."""
    maxmemory_policy: str | None = None
    queued: Mapping[str, int] = field(default_factory=dict)
    """Runs waiting in each label's queue."""
    runners: list[RunnerInfo] = field(default_factory=list)
    app_version: str = ""
    """The version of the App process that started last; empty when none said."""


def redis_checks(facts: RedisFacts) -> list[Check]:
    """Reachable, and keeping what it is given: queued runs, pipelines, dead letters."""
    if facts.error:
        return [
            Check(
                "fail",
                f"Redis is not reachable at {facts.where}: {facts.error}",
                "start redis-server, or set TRIMO_REDIS_URL (rediss:// for TLS, "
                "redis+sentinel:// for Sentinel)",
            )
        ]
    checks = [Check("ok", f"Redis {facts.version} is reachable at {facts.where}")]
    if facts.aof:
        fsync = f" (appendfsync {facts.appendfsync})" if facts.appendfsync else ""
        checks.append(Check("ok", f"Redis keeps every write in its append-only file{fsync}"))
    elif facts.save is None:
        checks.append(
            Check(
                "warn",
                "Redis's append-only file is off, and it does not say whether it saves "
                "snapshots (CONFIG is refused)",
                f"turn on appendonly yes, or check your provider's persistence; {BACKUP_HINT}",
            )
        )
    elif facts.save.strip():
        checks.append(
            Check(
                "warn",
                f"Redis saves snapshots only (save {facts.save!r}): a crash loses the queued "
                "runs, run events and pipelines written since the last one",
                f"turn on appendonly yes; {BACKUP_HINT}",
            )
        )
    else:
        checks.append(
            Check(
                "fail",
                "Redis keeps nothing on disk: a restart loses every queued run, run event, "
                "pipeline and dead letter",
                f"turn on appendonly yes; {BACKUP_HINT}",
            )
        )
    if facts.maxmemory_policy not in (None, "noeviction"):
        checks.append(
            Check(
                "fail",
                f"Redis evicts keys when full (maxmemory-policy {facts.maxmemory_policy}): "
                "it may drop queued runs and pipelines",
                "set maxmemory-policy noeviction",
            )
        )
    return checks


def label_checks(
    queued: Mapping[str, int],
    in_use: Iterable[str],
    runners: list[RunnerInfo],
    starting: Iterable[str] = (),
) -> list[Check]:
    """For each label in use (or with runs queued), the runners online that take it.
    `starting`: the labels of this machine's runner, not started yet (`trimo runner install`
    checks before the unit starts it), whose labels are not missing a runner."""
    pending = set(starting)
    labels = sorted({*in_use, *(label for label, count in queued.items() if count)})
    if not runners and not pending:
        return [
            Check(
                "fail",
                "no runner is online",
                "start `trimo runner` on a machine that runs agents (deploy/trimo-runner.service)",
            )
        ]
    checks = []
    if not runners:
        checks.append(Check("info", "no runner is online yet: this machine's, once started"))
    for label in labels:
        serving = [runner.id for runner in runners if label in runner.labels]
        waiting = queued.get(label, 0)
        queue_note = f", {waiting} run{'s' if waiting != 1 else ''} queued" if waiting else ""
        if serving:
            names = ", ".join(serving[:5]) + (" …" if len(serving) > 5 else "")
            checks.append(
                Check("ok", f"label {label}: {len(serving)} runner(s) online ({names}){queue_note}")
            )
        elif label in pending:
            checks.append(
                Check("info", f"label {label}: this machine's runner, once started{queue_note}")
            )
        else:
            checks.append(
                Check(
                    "fail" if waiting else "warn",
                    f"label {label}: no runner online{queue_note}",
                    f"start a runner with {label} in TRIMO_RUNNER_LABELS",
                )
            )
    return checks


def image_checks(runners: list[RunnerInfo]) -> list[Check]:
    """For each runner online, the images its heartbeat reports: an agent image that is
    missing or built for another version of Trimo fails (its runs would); the egress proxy's
    image is built by the runner itself when it needs it. Builds of one image that differ
    between runners are noted."""
    checks: list[Check] = []
    for runner in runners:
        where = f"runner {runner.id} on {runner.host}"
        if runner.images is None:
            checks.append(
                Check(
                    "warn",
                    f"{where} does not report its images (its Trimo is {runner.version})",
                    f"upgrade Trimo on {runner.host} and restart the runner",
                )
            )
            continue
        if not runner.images:
            checks.append(
                Check(
                    "warn",
                    f"{where} could not look at its images",
                    f"check that Docker is reachable on {runner.host} (`trimo doctor` there)",
                )
            )
            continue
        problems = [_image_check(where, runner.host, image) for image in runner.images]
        found = [check for check in problems if check is not None]
        if not any(check.mark == "fail" for check in found):
            names = ", ".join(
                f"{image.name} {_short(image.id)}" for image in runner.images if image.id
            )
            found.insert(0, Check("ok", f"{where} has its images: {names}"))
        checks.extend(found)
    return checks + _differing_builds(runners)


def version_checks(version: str, runners: list[RunnerInfo], app_version: str = "") -> list[Check]:
    """The App (`app_version`) and runners on another version of Trimo than `version` (this
    machine's): a warning, as the job contract may have moved between them."""
    fix = (
        "upgrade the older of the two, so that the App and every runner run one version "
        "(deploy/README.md, “Upgrading without losing runs”)"
    )
    checks = []
    if app_version and app_version != version:
        checks.append(
            Check("warn", f"the App runs Trimo {app_version}, this machine {version}", fix)
        )
    other = [runner for runner in runners if runner.version != version]
    if runners and not other:
        return [*checks, Check("ok", f"every runner online runs Trimo {version}, as here")]
    return checks + [
        Check(
            "warn",
            f"runner {runner.id} on {runner.host} runs Trimo {runner.version or '(unknown)'}, "
            f"this machine {version}",
            fix,
        )
        for runner in other
    ]


def _image_check(where: str, host: str, image: ImageInfo) -> Check | None:
    build = f"build it on {host} with `trimo image build --tag {image.name}`"
    if image.role == "egress":
        if not image.id:
            return Check(
                "info", f"{where} has no {image.name} yet: built at its first allowlist run"
            )
        if image.version != PROXY_VERSION:
            return Check("info", f"{where} rebuilds {image.name} at its next allowlist run")
        return None
    if not image.id:
        return Check("fail", f"{where} is missing the image {image.name}", build)
    if image.version != SANDBOX_VERSION:
        built = f"sandbox {image.version}" if image.version else "no sandbox label"
        return Check(
            "fail",
            f"{where} has an outdated image {image.name} ({built}; this Trimo needs sandbox "
            f"{SANDBOX_VERSION}): its runs fail",
            "re" + build,
        )
    return None


def _differing_builds(runners: list[RunnerInfo]) -> list[Check]:
    builds: dict[str, dict[str, list[str]]] = {}
    for runner in runners:
        for image in runner.images or []:
            if image.role == "agent" and image.id:
                builds.setdefault(image.name, {}).setdefault(image.id, []).append(runner.id)
    checks = []
    for name, by_id in sorted(builds.items()):
        if len(by_id) > 1:
            which = "; ".join(
                f"{_short(image_id)} on {', '.join(ids)}" for image_id, ids in sorted(by_id.items())
            )
            checks.append(Check("info", f"the runners have different builds of {name}: {which}"))
    return checks


def _short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


def preview_checks(dashboard_url: str, previews: Mapping[str, str]) -> list[Check]:
    """Whether previews (who serves them → TRIMO_RUNNER_PREVIEW_URL) keep apart from each
    other and from the dashboard at `dashboard_url` (TRIMO_PUBLIC_URL)."""
    dashboard = (urlsplit(dashboard_url).hostname or "").lower()
    checks = []
    if previews and not dashboard:
        checks.append(
            Check(
                "info",
                "TRIMO_PUBLIC_URL is not set here: whether previews share the dashboard's "
                "host name is not checked",
            )
        )
    for who, url in sorted(previews.items()):
        try:
            links = Links.parse(url)
        except ValueError:
            continue
        if (
            links.per_host
            and dashboard
            and (dashboard == links.host or dashboard.endswith("." + links.host))
        ):
            checks.append(
                Check(
                    "warn",
                    f"the dashboard ({dashboard}) is inside {who}'s preview host names "
                    f"({links}): a preview's script can set cookies the dashboard receives",
                    f"serve previews under a name the dashboard is not in: {SEPARATE_HOSTS}",
                )
            )
        elif links.per_host:
            checks.append(Check("ok", f"{who} serves each preview on a host of its own ({links})"))
        elif links.host.strip("[]") == dashboard:
            checks.append(
                Check(
                    "warn",
                    f"{who}'s previews share the host name {dashboard} with the dashboard: "
                    "cookies do not keep them apart (ports do not count), so a preview's "
                    "script can set cookies the dashboard receives",
                    f"give each preview a host of its own: {HOST_MODE}",
                )
            )
        else:
            checks.append(
                Check(
                    "info",
                    f"{who} serves previews on one host ({links}): they share one origin, so "
                    "in one browser a preview can read another that was opened after it",
                    f"recommended: a host per preview, {HOST_MODE}",
                )
            )
    return checks


@dataclass(frozen=True)
class EndpointFacts:
    """The operator's endpoints for agents' APIs, as this machine's settings give them."""

    anthropic_base_url: str | None = None
    codex_config_file: str | None = None
    codex_config: str | None = None
    """The Codex config file's text; None when it could not be read (see `codex_error`)."""
    codex_error: str = ""


def endpoint_checks(facts: EndpointFacts) -> list[Check]:
    """Where agents call: their vendors' APIs, or the operator's gateways, whose hosts join
    each run's allowlist (and may be private addresses, unlike a repository's hosts)."""
    checks: list[Check] = []
    if facts.anthropic_base_url:
        endpoint = endpoint_of(facts.anthropic_base_url, "TRIMO_ANTHROPIC_BASE_URL")
        checks.append(
            Check(
                "ok",
                f"claude and aider call Anthropic's API at {facts.anthropic_base_url} "
                f"({endpoint} joins their allowlist)",
            )
        )
    if facts.codex_config_file:
        checks.extend(_codex_config_checks(facts))
    if not checks:
        checks.append(
            Check(
                "info",
                "agents call their vendors' APIs; TRIMO_ANTHROPIC_BASE_URL or "
                "TRIMO_CODEX_CONFIG_FILE point them at a gateway (README, “Agent credentials”)",
            )
        )
    return checks


def _codex_config_checks(facts: EndpointFacts) -> list[Check]:
    where = f"TRIMO_CODEX_CONFIG_FILE {facts.codex_config_file}"
    if facts.codex_config is None:
        return [
            Check(
                "fail",
                f"{where} cannot be read: {facts.codex_error}",
                "point it at a config.toml the runner can read; codex runs fail until then",
            )
        ]
    try:
        config = read_codex_config(facts.codex_config, str(facts.codex_config_file))
    except TrimoError as exc:
        return [Check("fail", exc.message, exc.hint or "codex runs fail until it is fixed")]
    if not config.endpoints:
        checks = [
            Check(
                "warn",
                f"{where} names no model provider with a base_url: codex calls OpenAI's API",
                'add [model_providers.<id>] with base_url, and model_provider = "<id>"',
            )
        ]
    else:
        hosts = ", ".join(map(str, config.endpoints))
        checks = [Check("ok", f"codex takes its config from {where}; {hosts} join its allowlist")]
    for provider, env in sorted(config.key_env.items()):
        if env not in CODEX_KEY_ENV:
            checks.append(
                Check(
                    "warn",
                    f"model_providers.{provider}.env_key is {env}, which no run is given",
                    'set env_key = "OPENAI_API_KEY" and give the key as TRIMO_OPENAI_API_KEY',
                )
            )
    return checks


def show(out: Console, title: str, checks: Iterable[Check]) -> int:
    """Print `checks` under `title`; how many failed."""
    out.print(Text(title, style="bold"))
    failed = 0
    for check in checks:
        symbol, style = MARKS[check.mark]
        line = Text.assemble((symbol, style), " ", check.what)
        if check.fix:
            line.append_text(Text.assemble("\n    ", ("→", "yellow"), " ", check.fix))
        out.print(line, highlight=False)
        failed += check.mark == "fail"
    return failed


async def gather_redis(url: str) -> RedisFacts:
    """What Redis says about itself, its queues and the runners' heartbeats."""
    import redis as redis_py

    where = redisurl.display(url)
    client = redisurl.async_client(url, socket_connect_timeout=3, socket_timeout=5)
    try:
        info = await client.info()
        persistence = await client.info("persistence")
        save = appendfsync = policy = None
        try:
            save = _config(await client.config_get("save"), "save")
            appendfsync = _config(await client.config_get("appendfsync"), "appendfsync")
            policy = _config(await client.config_get("maxmemory-policy"), "maxmemory-policy")
        except redis_py.ResponseError:
            pass
        queued = {}
        async for key in client.scan_iter(match=contract.run_queue("*"), count=500):
            name = key.decode() if isinstance(key, bytes) else str(key)
            if await client.type(name) in (b"zset", "zset"):
                queued[name.removeprefix(contract.run_queue(""))] = int(await client.zcard(name))
        runners = await registry.online_runners(client)
        app_version = await client.get(contract.APP_VERSION)
    except (redis_py.RedisError, OSError) as exc:
        return RedisFacts(where=where, error=f"{type(exc).__name__}: {exc}")
    finally:
        await client.aclose()
    return RedisFacts(
        where=where,
        version=str(info.get("redis_version", "")),
        aof=str(persistence.get("aof_enabled", "0")) == "1",
        appendfsync=appendfsync or "",
        save=save,
        maxmemory_policy=policy or None,
        queued=queued,
        runners=runners,
        app_version=app_version.decode() if isinstance(app_version, bytes) else app_version or "",
    )


def _config(answer: Mapping[object, object], name: str) -> str:
    for key, value in answer.items():
        text_key = key.decode() if isinstance(key, bytes) else str(key)
        if text_key == name:
            return value.decode() if isinstance(value, bytes) else str(value)
    return ""
