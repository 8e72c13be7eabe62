"""`trimo doctor` for a deployment, the App's part: its settings and whether GitHub accepts
its credentials, and which runner labels its pipelines use. Checks are pure functions of
facts gathered first (`gather_app`, `labels_in_use`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from arq.connections import ArqRedis, create_pool
from githubkit.exception import RequestError, RequestFailed
from redis.exceptions import RedisError
from rich.console import Console

from app.github.client import AppIdentity, GitHubApp, UnexpectedAnswer
from app.runs.pipelines import Pipelines
from app.settings import AppSettings
from runner import __version__, redisurl
from runner.contract import DEFAULT_LABEL
from runner.doctor import (
    Check,
    gather_redis,
    image_checks,
    label_checks,
    preview_checks,
    redis_checks,
    show,
    version_checks,
)
from runner.errors import TrimoError

GITHUB_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Sides:
    """Which side of a deployment `trimo doctor` checks here, and why."""

    app: bool
    runner: bool
    why: str


def choose_sides(
    app_flag: bool, runner_flag: bool, app_configured: bool, runner_configured: bool
) -> Sides:
    """`--app` / `--runner` as given; else what this environment is set up as: the App where
    TRIMO_GITHUB_APP_ID is set, a runner where a TRIMO_RUNNER_* identity is or nothing is."""
    if app_flag or runner_flag:
        return Sides(app_flag, runner_flag, "as asked")
    if app_configured and runner_configured:
        return Sides(True, True, "TRIMO_GITHUB_APP_ID and TRIMO_RUNNER_* are set here")
    if app_configured:
        return Sides(True, False, "TRIMO_GITHUB_APP_ID is set here; --runner checks a runner")
    return Sides(False, True, "TRIMO_GITHUB_APP_ID is not set here; --app checks the App")


def app_configured(settings: AppSettings | str) -> bool:
    """Whether this environment is the App's (settings that fail to load count: say why)."""
    return not isinstance(settings, AppSettings) or settings.github_app_id is not None


async def report(
    out: Console,
    redis_url: str,
    preview_url: str = "",
    app: bool = True,
    starting: Iterable[str] = (),
) -> int:
    """Print the deployment's checks: Redis, the runners for each label and their images and
    versions, previews beside the dashboard (`preview_url`: this machine's
    TRIMO_RUNNER_PREVIEW_URL), and with `app` the App's own; how many failed. `starting`: the
    labels of this machine's runner when it is not started yet (`label_checks`)."""
    redis = await gather_redis(redis_url)
    failed = show(out, "\nRedis", redis_checks(redis))
    settings = app_settings()
    labels: set[str] = set()
    if isinstance(settings, AppSettings) and not redis.error:
        try:
            labels = await labels_in_use(settings)
        except (RedisError, OSError):
            labels = set()
    if not redis.error:
        failed += show(
            out, "\nRunners", label_checks(redis.queued, labels, redis.runners, starting)
        )
        if redis.runners:
            failed += show(out, "\nRunners' images", image_checks(redis.runners))
        if versions := version_checks(__version__, redis.runners, redis.app_version):
            failed += show(out, "\nVersions", versions)
    previews = {f"runner {r.id}": r.preview_url for r in redis.runners if r.preview_url}
    if preview_url and preview_url not in previews.values():
        previews["this machine's runner"] = preview_url
    if isinstance(settings, AppSettings) and previews:
        failed += show(out, "\nPreviews", preview_checks(settings.public_url, previews))
    if not app:
        return failed
    if isinstance(settings, str):
        return failed + show(out, "\nThe GitHub App", [Check("fail", settings)])
    return failed + show(out, "\nThe GitHub App", app_checks(await gather_app(settings)))


@dataclass(frozen=True)
class AppFacts:
    configured: bool
    """TRIMO_GITHUB_APP_ID is set: this machine runs the App (else its checks are skipped)."""
    webhook_secret: bool = False
    key_error: str = ""
    identity: AppIdentity | None = None
    github_error: str = ""
    slug: str = ""
    api_url: str = ""


def app_checks(facts: AppFacts) -> list[Check]:
    if not facts.configured:
        return [Check("info", "TRIMO_GITHUB_APP_ID is not set here: the App's checks are skipped")]
    checks = [
        Check("ok", "the webhook secret is set")
        if facts.webhook_secret
        else Check(
            "fail",
            "no webhook secret: `trimo serve` refuses to start (unsigned webhooks)",
            "set TRIMO_WEBHOOK_SECRET to the secret in the GitHub App's settings",
        )
    ]
    if facts.key_error:
        return [*checks, Check("fail", facts.key_error, "run `trimo setup`, or fix the key")]
    if facts.identity is None:
        return [
            *checks,
            Check(
                "fail",
                f"GitHub did not accept the App's credentials at {facts.api_url}: "
                f"{facts.github_error}",
                "check TRIMO_GITHUB_APP_ID and the private key (both from `trimo setup` or "
                "the App's settings page), and TRIMO_GITHUB_API_URL",
            ),
        ]
    app = facts.identity
    checks.append(
        Check("ok", f"GitHub accepts the App's credentials: {app.slug or app.name} (id {app.id})")
    )
    if app.slug and app.slug != facts.slug:
        checks.append(
            Check(
                "warn",
                f"the App's slug is {app.slug}, but TRIMO_APP_SLUG is {facts.slug}: "
                f"`@{app.slug}` mentions are not recognised",
                f"set TRIMO_APP_SLUG={app.slug}",
            )
        )
    return checks


def app_settings() -> AppSettings | str:
    """The App's settings, or why they cannot be read."""
    try:
        return AppSettings()
    except ValueError as exc:
        return f"the App's settings are invalid: {exc}"


async def gather_app(settings: AppSettings) -> AppFacts:
    """The App's settings, and GitHub's answer to `GET /app` with its credentials."""
    facts = AppFacts(
        configured=settings.github_app_id is not None,
        webhook_secret=bool(settings.webhook_secret and settings.webhook_secret.get_secret_value()),
        slug=settings.app_slug,
        api_url=settings.github_api_url,
    )
    if not facts.configured:
        return facts
    try:
        settings.private_key()
    except TrimoError as exc:
        return replace(facts, key_error=exc.message)
    client = redisurl.async_client(settings.redis_url)  # not used by `identity`
    try:
        github = GitHubApp(settings, client, auto_retry=False, timeout=GITHUB_TIMEOUT_SECONDS)
        return replace(facts, identity=await github.identity())
    except (ValueError, TypeError) as exc:  # a key that is not a PEM private key
        return replace(facts, key_error=f"the App's private key cannot be used: {exc}")
    except RequestFailed as exc:
        return replace(facts, github_error=f"HTTP {exc.response.status_code}")
    except (RequestError, UnexpectedAnswer) as exc:
        return replace(facts, github_error=str(exc) or type(exc).__name__)
    finally:
        await client.aclose()


async def labels_in_use(settings: AppSettings) -> set[str]:
    """The default label and the labels of runs that wait or run in any pipeline."""
    client = await _pool(settings)
    labels = {DEFAULT_LABEL}
    try:
        store = Pipelines(client)
        for pipeline_id in await store.ids():
            pipeline = await store.get(pipeline_id)
            if pipeline is not None:
                labels.update(run.label for run in pipeline.runs if run.status != "finished")
    finally:
        await client.aclose()
    return labels


async def _pool(settings: AppSettings) -> ArqRedis:
    return await create_pool(redisurl.redis_settings(settings.redis_url, conn_retries=0))
