"""The GitHub App's settings: environment variables prefixed `TRIMO_`, or `.env`; each
secret also as `TRIMO_<NAME>_FILE` (runner/basesettings.py)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from runner.basesettings import TrimoSettings
from runner.contract import (
    ATTEMPTS_KEEP_DAYS_DEFAULT,
    DEFAULT_IMAGE,
    MAX_ATTEMPTS,
    MAX_ATTEMPTS_DEFAULT,
)
from runner.errors import TrimoError
from runner.network.hosts import clean_hosts


class SettingsError(TrimoError):
    """A setting the App needs is missing or unusable."""


def _csv(value: str) -> frozenset[str]:
    return frozenset(item.strip() for item in value.split(",") if item.strip())


class AppSettings(TrimoSettings):
    """Settings for the App's web edge, its worker and its server-side policy."""

    github_app_id: int | None = None
    github_private_key: SecretStr | None = None
    """The PEM itself; `\\n` escapes are accepted for one-line environment variables."""
    github_private_key_path: Path | None = None
    webhook_secret: SecretStr | None = None
    github_api_url: str = "https://api.github.com"
    app_slug: str = "trimo"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    max_webhook_bytes: int = Field(default=25 * 1024 * 1024, gt=0)
    stop_unready_seconds: float = Field(default=0, ge=0, le=60)
    """On stop, how long the web edge goes on answering while /healthz says 503, so that a
    load balancer in front (deploy/Caddyfile) sends no more requests before it closes."""
    worker_port: int = Field(default=8001, ge=0, le=65535)
    """Where `trimo worker` serves /healthz and its own /metrics (on `host`)."""
    metrics_token: SecretStr | None = None
    """When set, `GET /metrics` wants `Authorization: Bearer <token>`."""

    policy_max_timeout_minutes: int = Field(default=120, gt=0)
    policy_allowed_images: str = ""
    """Comma-separated image names agents may use; empty allows any."""
    policy_allowed_networks: str = "none,allowlist,bridge"
    policy_allowed_hosts: str = ""
    """Comma-separated hosts (`name` or `*.suffix`) repositories may allow; empty allows any."""
    policy_monthly_usd: float | None = Field(default=None, gt=0)
    """Each repository's monthly spend cap: past it, no run starts there until next month."""
    policy_monthly_usd_per_person: float | None = Field(default=None, gt=0)
    """Each person's monthly spend cap, over every repository."""
    policy_max_attempts: int = Field(default=MAX_ATTEMPTS_DEFAULT, ge=1, le=MAX_ATTEMPTS)
    """The most attempts of one prompt (`--attempts`, `--agents`, `attempts:`)."""
    attempts_keep_days: int = Field(default=ATTEMPTS_KEEP_DAYS_DEFAULT, gt=0)
    """How long the attempts' branches stay after one is picked (a later pick can switch)."""
    default_image: str = DEFAULT_IMAGE
    log_retention_days: int = Field(default=14, gt=0)
    """How long a run's event log stays after the run ends (the dashboard shows it)."""

    github_url: str = "https://github.com"
    """Web address of GitHub (or GitHub Enterprise Server): where people sign in."""
    github_client_id: str | None = None
    github_client_secret: SecretStr | None = None
    """The App's OAuth credentials (saved by `trimo setup`), for signing in to the dashboard."""
    session_secret: SecretStr | None = None
    """Signs the dashboard's session cookies; `trimo setup` generates one."""
    public_url: str = ""
    """Address people reach `trimo serve` at, e.g. https://trimo.example.com (https makes
    cookies secure); empty: the address each request came to."""
    admins: str = ""
    """Comma-separated GitHub logins who see every repository and the fleet."""
    slack_webhook_url: SecretStr | None = None
    """A Slack incoming webhook told when a run ends (app/reporting/channels/slack.py)."""
    slack_include_prompt: bool = False
    """Whether those messages quote the run's prompt (off: only the pipeline and outcome)."""

    def private_key(self) -> str:
        """The App's PEM private key, from `github_private_key` or else the file it names."""
        if self.github_private_key is not None and self.github_private_key.get_secret_value():
            pem = self.github_private_key.get_secret_value()
            return pem if "\n" in pem else pem.replace("\\n", "\n")
        if self.github_private_key_path is not None:
            try:
                return self.github_private_key_path.read_text()
            except OSError as exc:
                raise SettingsError(
                    f"cannot read the GitHub App private key at {self.github_private_key_path}: "
                    f"{exc.strerror or exc}",
                    hint="check TRIMO_GITHUB_PRIVATE_KEY_PATH",
                ) from exc
        raise SettingsError(
            "the GitHub App private key is not configured",
            hint="set TRIMO_GITHUB_PRIVATE_KEY (the PEM) or TRIMO_GITHUB_PRIVATE_KEY_PATH (a file)",
        )

    def require_webhook_secret(self) -> str:
        """The webhook secret; the App must not serve webhooks without one."""
        if self.webhook_secret is None or not self.webhook_secret.get_secret_value():
            raise SettingsError(
                "no webhook secret: refusing to accept unsigned GitHub webhooks",
                hint="set TRIMO_WEBHOOK_SECRET_FILE (or TRIMO_WEBHOOK_SECRET) to the secret "
                "configured on the GitHub App",
            )
        return self.webhook_secret.get_secret_value()

    def admin_logins(self) -> frozenset[str]:
        """`admins`, lower-cased: GitHub logins are case-insensitive."""
        return frozenset(login.lower() for login in _csv(self.admins))

    def allowed_images(self) -> frozenset[str]:
        """Images a run may use; empty means any."""
        return _csv(self.policy_allowed_images)

    def allowed_networks(self) -> frozenset[str]:
        """Network modes a run may ask for."""
        return _csv(self.policy_allowed_networks)

    def allowed_hosts(self) -> list[str]:
        """Hosts repositories may add to an `allowlist` run; empty means any."""
        hosts, errors = clean_hosts(_csv(self.policy_allowed_hosts))
        if errors:
            raise SettingsError(
                "TRIMO_POLICY_ALLOWED_HOSTS: " + "; ".join(errors),
                hint="list host names or `*.suffix` patterns, separated by commas",
            )
        return sorted(hosts)
