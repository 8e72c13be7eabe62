"""Trimo's runner: workspaces, git, containers, agent adapters and the run engine.

Nothing here imports from `app`; the job contract in `runner.job` is what the
App imports to talk to runners.
"""

__version__ = "0.1.0"
