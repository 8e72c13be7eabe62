"""Runner-side policy: what this machine agrees to run, whatever the App asks."""

from __future__ import annotations

from fnmatch import fnmatchcase

from pydantic import BaseModel, Field

from runner.job import RunRequest
from runner.network.hosts import clean_hosts, outside_caps


class RunnerPolicy(BaseModel):
    """Empty lists mean "any"."""

    allowed_repos: list[str] = Field(default_factory=list)
    """Glob patterns of `owner/name`, e.g. `my-org/*`."""
    allowed_images: list[str] = Field(default_factory=list)
    allowed_networks: list[str] = Field(default_factory=lambda: ["none", "allowlist", "bridge"])
    allowed_hosts: list[str] = Field(default_factory=list)
    """Hosts (`name` or `*.suffix`) a job may add to its agent's API hosts; empty means any."""
    max_timeout_minutes: float = 24 * 60


def refusal(request: RunRequest, policy: RunnerPolicy) -> str | None:
    """Why this runner will not run `request`, or None when it will."""
    repo = request.repo.full_name
    if policy.allowed_repos and not any(fnmatchcase(repo, p) for p in policy.allowed_repos):
        return f"this runner does not run jobs for {repo}"
    if policy.allowed_images and request.image not in policy.allowed_images:
        allowed = ", ".join(policy.allowed_images)
        return f"this runner does not run the image {request.image} (allowed: {allowed})"
    if request.network not in policy.allowed_networks:
        allowed = ", ".join(policy.allowed_networks) or "none"
        return f"this runner does not allow network {request.network!r} (allowed: {allowed})"
    if request.network == "allowlist" and (hosts := host_refusal(request.allowed_hosts, policy)):
        return hosts
    if request.timeout_s > policy.max_timeout_minutes * 60:
        return (
            f"this runner allows at most {policy.max_timeout_minutes:g} minutes per run; "
            f"the job asked for {request.timeout_s / 60:g}"
        )
    return None


def split_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def host_refusal(hosts: list[str], policy: RunnerPolicy) -> str | None:
    """Why this runner will not open `hosts` to an agent, or None when it will."""
    valid, errors = clean_hosts(hosts)
    if errors:
        return "allowed hosts: " + "; ".join(errors)
    if outside := outside_caps(valid, policy.allowed_hosts):
        return (
            f"this runner does not allow the host{'s' if len(outside) > 1 else ''} "
            f"{', '.join(outside)} (it allows: {', '.join(policy.allowed_hosts)}; "
            "TRIMO_RUNNER_ALLOWED_HOSTS)"
        )
    return None
