"""What may run: who may command Trimo, and the server's caps on what a repository asks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.conversation.commands import MAX_TIMEOUT_MINUTES, RunCommand
from app.conversation.naming import inline_code
from app.conversation.repoconfig import RepoConfig, memory_bytes
from runner.contract import (
    DEFAULT_IMAGE,
    DEFAULT_VERIFY_TIMEOUT_SECONDS,
    MAX_ATTEMPTS,
    MAX_ATTEMPTS_DEFAULT,
    NetworkMode,
)
from runner.job import Resources, VerifyCheck
from runner.network.hosts import outside_caps
from runner.setup.spec import SetupSpec

ROLE_ORDER: tuple[str, ...] = ("read", "triage", "write", "maintain", "admin")
"""Repository roles from least to most powerful, as GitHub's `role_name` spells them."""


def role_allows(role_name: str | None, minimum: str) -> bool:
    """Whether `role_name` reaches `minimum`; an unknown or missing role never does."""
    if role_name not in ROLE_ORDER or minimum not in ROLE_ORDER:
        return False
    return ROLE_ORDER.index(role_name) >= ROLE_ORDER.index(minimum)


def is_bot(login: str, user_type: str | None) -> bool:
    """Whether a comment's author is a bot (including Trimo itself): bots never command."""
    return user_type == "Bot" or login.lower().endswith("[bot]")


def _all_networks() -> list[NetworkMode]:
    return ["none", "allowlist", "bridge"]


class ServerPolicy(BaseModel):
    """Limits set by whoever runs the Trimo server; repositories cannot go past them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_timeout_minutes: int = Field(default=120, ge=1, le=MAX_TIMEOUT_MINUTES)
    allowed_images: list[str] = Field(default_factory=list)
    """Images a repository may choose; empty means any. The default image is always allowed."""
    allowed_networks: list[NetworkMode] = Field(default_factory=_all_networks)
    allowed_agents: list[str] = Field(default_factory=list)
    """Empty means any agent."""
    allowed_hosts: list[str] = Field(default_factory=list)
    """Hosts (`name` or `*.suffix`) a repository may add on an `allowlist` network; empty: any."""
    default_image: str = DEFAULT_IMAGE
    max_memory: str = "16g"
    max_cpus: float = Field(default=8.0, gt=0, le=64)
    max_pids: int = Field(default=4096, ge=16, le=65536)
    monthly_usd: float | None = Field(default=None, gt=0)
    """Each repository's spend cap per calendar month (UTC); None: no cap."""
    monthly_usd_per_person: float | None = Field(default=None, gt=0)
    """Each person's spend cap per calendar month, over every repository; None: no cap."""
    max_attempts: int = Field(default=MAX_ATTEMPTS_DEFAULT, ge=1, le=MAX_ATTEMPTS)
    """The most attempts of one prompt."""

    @field_validator("max_memory")
    @classmethod
    def _memory_ok(cls, value: str) -> str:
        memory_bytes(value)
        return value


class RunSettings(BaseModel):
    """The settings one run gets, after command, repository config and policy are merged."""

    model_config = ConfigDict(frozen=True)

    agent: str
    image: str
    label: str
    timeout_minutes: int
    network: NetworkMode
    allowed_hosts: list[str] = Field(default_factory=list)
    """The repository's hosts, added to the agent's API hosts on an `allowlist` network."""
    resources: Resources
    verify: list[VerifyCheck] = Field(default_factory=list)
    """The repository's checks, run after a coding run that made commits."""
    verify_timeout_minutes: int = DEFAULT_VERIFY_TIMEOUT_SECONDS // 60
    verify_fix_attempts: int = 0
    """Whether (and how often in a row) failing checks go back to the agent."""
    max_cost_usd: float | None = None
    """The run's budget: its runner stops it once its agent reports spending this much."""
    setup: SetupSpec | None = None
    """The repository's `setup:`, run once per cache key before agents start."""

    @property
    def timeout_s(self) -> int:
        return self.timeout_minutes * 60


@dataclass(frozen=True)
class Refusal:
    """The run may not start; `message` (markdown) says why, for the person who asked."""

    message: str
    problems: tuple[str, ...]


def effective_run(
    config: RepoConfig, command: RunCommand, policy: ServerPolicy
) -> RunSettings | Refusal:
    """Merge the command's options over the repository's config, then check the policy."""
    network = command.network or config.network
    settings = RunSettings(
        agent=command.agent or config.agent,
        image=config.image or policy.default_image,
        label=command.label or config.runner_label,
        timeout_minutes=command.timeout_minutes or config.timeout_minutes,
        network=network,
        allowed_hosts=list(config.allowed_hosts) if network == "allowlist" else [],
        max_cost_usd=config.max_cost_usd,
        resources=Resources(
            memory=config.resources.memory,
            cpus=config.resources.cpus,
            pids=config.resources.pids,
        ),
        verify=list(config.verify),
        verify_timeout_minutes=config.verify_timeout_minutes,
        verify_fix_attempts=config.verify_fix_attempts,
        setup=config.setup.spec() if config.setup is not None else None,
    )
    problems = _problems(settings, command, policy)
    if problems:
        return Refusal(message=" ".join(problems), problems=tuple(problems))
    return settings


def planned_agents(config: RepoConfig, command: RunCommand) -> list[str]:
    """The agent of each attempt asked for, one entry per attempt (one entry: one run).

    `--agents` gives one attempt of each (`--attempts` of each, with both); else
    `--attempts`, else the repository's `attempts:`, of the one agent. Discovery runs are
    never attempts."""
    if command.mode != "code":
        return [command.agent or config.agent]
    if command.agents:
        return [agent for agent in command.agents for _ in range(command.attempts or 1)]
    return [command.agent or config.agent] * (command.attempts or config.attempts)


def attempts_refusal(count: int, policy: ServerPolicy, from_config: bool) -> Refusal | None:
    """Refused when more attempts are asked for than the server allows (the cap is named)."""
    if count <= policy.max_attempts:
        return None
    asked = "`.github/trimo.yml` asks for" if from_config else "you asked for"
    problem = (
        f"This server runs at most {policy.max_attempts} attempts of one prompt "
        f"(`TRIMO_POLICY_MAX_ATTEMPTS`); {asked} {count}."
    )
    return Refusal(message=problem, problems=(problem,))


def monthly_refusal(
    policy: ServerPolicy, repo_usd: float, person_usd: float, dashboard_url: str
) -> Refusal | None:
    """Refused when the repository's or the asking person's spend this month has reached its
    cap (the reply is addressed to that person). The reply names the cap and links the spend
    page of the dashboard at `dashboard_url` (empty: not known), never a figure: a public
    thread must not tell everyone what a person spent across every repository, nor what the
    repository spent."""
    problems: list[str] = []
    base = dashboard_url.rstrip("/")
    page = f"[spend page]({base}/spend)" if base else "spend page (`/spend`)"
    cap = policy.monthly_usd
    if cap is not None and repo_usd >= cap:
        problems.append(
            f"This repository has reached its monthly cap of ${cap:.2f} "
            f"(`TRIMO_POLICY_MONTHLY_USD`); its figures are on the dashboard's {page}."
        )
    cap = policy.monthly_usd_per_person
    if cap is not None and person_usd >= cap:
        problems.append(
            f"You have reached the monthly cap of ${cap:.2f} per person "
            f"(`TRIMO_POLICY_MONTHLY_USD_PER_PERSON`); your figures are on the dashboard's {page}."
        )
    if not problems:
        return None
    problems.append(
        "No run starts until the month ends (UTC), unless whoever runs this Trimo server "
        "raises the cap."
    )
    return Refusal(message=" ".join(problems), problems=tuple(problems))


def _problems(settings: RunSettings, command: RunCommand, policy: ServerPolicy) -> list[str]:
    problems: list[str] = []
    config_file = "`.github/trimo.yml`"

    if settings.timeout_minutes > policy.max_timeout_minutes:
        asked = "you asked for" if command.timeout_minutes else f"{config_file} asks for"
        problems.append(
            f"This repository may run for at most {policy.max_timeout_minutes} minutes; "
            f"{asked} {settings.timeout_minutes}."
        )
    if settings.verify and settings.verify_timeout_minutes > policy.max_timeout_minutes:
        problems.append(
            f"A check may run for at most {policy.max_timeout_minutes} minutes; "
            f"{config_file} asks for {settings.verify_timeout_minutes} "
            "(`verify_timeout_minutes`)."
        )
    if settings.network not in policy.allowed_networks:
        asked = "you asked for" if command.network else f"{config_file} asks for"
        allowed = _names(policy.allowed_networks)
        problems.append(
            f"This server does not allow the network {inline_code(settings.network)} "
            f"({asked} it); allowed: {allowed}."
        )
    if outside := outside_caps(settings.allowed_hosts, policy.allowed_hosts):
        hosts, them = ("hosts", "them") if len(outside) > 1 else ("host", "it")
        problems.append(
            f"This server does not allow the {hosts} {_names(outside)} ({config_file} asks "
            f"for {them} in `allowed_hosts`); allowed: {_names(policy.allowed_hosts)}. Remove "
            f"{them} from `allowed_hosts`, or ask whoever runs this Trimo server to add "
            f"{them} to `TRIMO_POLICY_ALLOWED_HOSTS`."
        )
    problems += _setup_problems(settings.setup, policy)
    if policy.allowed_agents and settings.agent not in policy.allowed_agents:
        asked = "you asked for" if command.agent else f"{config_file} asks for"
        problems.append(
            f"This server does not offer the agent {inline_code(settings.agent)} "
            f"({asked} it); available: {_names(policy.allowed_agents)}."
        )
    image_ok = (
        not policy.allowed_images
        or settings.image == policy.default_image
        or settings.image in policy.allowed_images
    )
    if not image_ok:
        problems.append(
            f"This server does not allow the image {inline_code(settings.image)} "
            f"({config_file} asks for it); allowed: "
            f"{_names([policy.default_image, *policy.allowed_images])}."
        )
    resources = settings.resources
    if memory_bytes(resources.memory) > memory_bytes(policy.max_memory):
        problems.append(
            f"A run may use at most {policy.max_memory} of memory; "
            f"{config_file} asks for {resources.memory}."
        )
    if resources.cpus > policy.max_cpus:
        problems.append(
            f"A run may use at most {policy.max_cpus:g} CPUs; "
            f"{config_file} asks for {resources.cpus:g}."
        )
    if resources.pids > policy.max_pids:
        problems.append(
            f"A run may start at most {policy.max_pids} processes; "
            f"{config_file} asks for {resources.pids}."
        )
    return problems


def _setup_problems(setup: SetupSpec | None, policy: ServerPolicy) -> list[str]:
    if setup is None:
        return []
    problems: list[str] = []
    minutes = setup.timeout_s // 60
    if minutes > policy.max_timeout_minutes:
        problems.append(
            f"A setup may run for at most {policy.max_timeout_minutes} minutes; "
            f"`.github/trimo.yml` asks for {minutes} in `setup.timeout_minutes`."
        )
    if setup.allowed_hosts and "allowlist" not in policy.allowed_networks:
        problems.append(
            "This server does not allow the network `allowlist`, which `setup.allowed_hosts` "
            "needs; remove them, or ask whoever runs this Trimo server to allow it."
        )
    if outside := outside_caps(setup.allowed_hosts, policy.allowed_hosts):
        hosts, them = ("hosts", "them") if len(outside) > 1 else ("host", "it")
        problems.append(
            f"This server does not allow the {hosts} {_names(outside)} (`.github/trimo.yml` "
            f"asks for {them} in `setup.allowed_hosts`); allowed: "
            f"{_names(policy.allowed_hosts)}. Remove {them}, or ask whoever runs this Trimo "
            f"server to add {them} to `TRIMO_POLICY_ALLOWED_HOSTS`."
        )
    return problems


def _names(values: Sequence[str]) -> str:
    unique = list(dict.fromkeys(values))
    return ", ".join(inline_code(value) for value in unique) if unique else "nothing"
