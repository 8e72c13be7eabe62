"""A local stand-in for GitHub: REST API (the part Trimo uses) and a real git server."""

from tests.fakegithub.api import FakeGitHub
from tests.fakegithub.runner import AppCredentials, RunningFakeGitHub, generate_key_pair
from tests.fakegithub.state import FakeState, RecordedRequest, Violation

__all__ = [
    "AppCredentials",
    "FakeGitHub",
    "FakeState",
    "RecordedRequest",
    "RunningFakeGitHub",
    "Violation",
    "generate_key_pair",
]
