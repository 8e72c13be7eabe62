"""Trimo's runner: workspaces, git, containers, agent adapters and the run engine.

Nothing here imports from `app`; the job contract in `runner.job` is what the
App imports to talk to runners.
"""

__version__ = "0.1.0"
"""Trimo's version, in one place: pyproject.toml reads it; runners report it in their
heartbeat, and doctor and the fleet page compare it with the App's. Released as the git tag
v<version> (CHANGELOG.md)."""
