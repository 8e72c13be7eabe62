"""`trimo run`'s `setup:`: the repository's own, read from `.github/trimo.yml` on the base
branch as `trimo run` reads its checks (and as the App reads both from the default branch)."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from runner.errors import TrimoError
from runner.setup.config import SetupConfig
from runner.setup.spec import SetupSpec
from runner.verify import CONFIG_PATH, base_config, config_problem

HINT: Final = "fix it, or pass --no-setup"


def local_setup(repo: Path, base_branch: str) -> SetupSpec | None:
    """The `setup:` of `.github/trimo.yml` on `base_branch` (None: there is none)."""
    text = base_config(repo, base_branch, HINT)
    return None if text is None else read_setup(text, f"{CONFIG_PATH} on {base_branch}")


class _Section(BaseModel):
    """What `trimo run` reads here of `.github/trimo.yml` (the App reads, and checks, the rest)."""

    model_config = ConfigDict(extra="ignore")

    setup: SetupConfig | None = None


def read_setup(text: str, where: str) -> SetupSpec | None:
    """The `setup:` of a `.github/trimo.yml` text; TrimoError saying what is wrong."""
    try:
        data = yaml.safe_load(text)
        section = _Section.model_validate(data if isinstance(data, dict) else {}).setup
    except (yaml.YAMLError, ValidationError, ValueError) as exc:
        raise TrimoError(
            f"{where} has a problem in its setup: {config_problem(exc)}", HINT
        ) from None
    return None if section is None else section.spec()
