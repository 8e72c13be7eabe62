"""Trimo's runner: workspaces, git, containers, agent adapters and the run engine.

Nothing here imports from `app`; the job contract in `runner.job` is what the
App imports to talk to runners.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("trimo")
except PackageNotFoundError:  # a tree used without being installed
    __version__ = "0.0"
"""Trimo's version, from the git tag it was installed from (setuptools-scm; pyproject.toml's
[tool.setuptools_scm], whose fallback_version "0.0" this is too). Runners report it in their
heartbeat, and doctor and the fleet page compare it with the App's."""
