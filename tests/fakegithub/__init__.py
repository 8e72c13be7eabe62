"""A local stand-in for GitHub: REST API (the part Trimo uses) and a real git server.

Knobs, all on `FakeState` (see modes.py and state.py): `delay`, `rounds`, `drift`, `chaos`,
`serve_example` / `serve_recorded` / `serve`, `fail_next`, and what happens on GitHub
mid-run: `delete_issue`, `transfer_issue`, `delete_comment`, `delete_check_run`,
`refuse_pull`, `disable_issues`, `remove_installation`, `suspend_installation`,
`revoke_permission`; signing in with GitHub (oauth.py): `sign_in_as`, `expire_codes`,
`expire_user_tokens`, `revoke_user_tokens`; push rules per `Repo` (`push_protection`,
`signed_commits`, `max_file_bytes`; workflow files need the token's `workflows` permission).
"""

from tests.fakegithub.api import FakeGitHub
from tests.fakegithub.modes import Chaos, Drift, Rounds
from tests.fakegithub.runner import AppCredentials, RunningFakeGitHub, generate_key_pair
from tests.fakegithub.state import FakeState, RecordedRequest, Violation

__all__ = [
    "AppCredentials",
    "Chaos",
    "Drift",
    "FakeGitHub",
    "FakeState",
    "RecordedRequest",
    "Rounds",
    "RunningFakeGitHub",
    "Violation",
    "generate_key_pair",
]
