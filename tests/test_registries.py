"""The agent image's registries come from the building host's configuration."""

from __future__ import annotations

from runner.images import registry_build_args


def test_explicit_settings_win_and_only_http_urls_are_passed() -> None:
    asked: list[list[str]] = []

    def ask(argv: list[str]) -> str:
        asked.append(argv)
        return "https://npm.example.com/\n" if argv[0] == "npm" else "undefined"

    environ = {"TRIMO_PIP_INDEX_URL": "https://pip.example.com/simple"}
    assert registry_build_args(environ, ask) == {
        "NPM_REGISTRY": "https://npm.example.com/",
        "PIP_INDEX_URL": "https://pip.example.com/simple",
    }
    assert [argv[0] for argv in asked] == ["npm"]  # pip's own config was not needed


def test_a_registry_the_host_does_not_name_is_left_out() -> None:
    assert registry_build_args({}, lambda _argv: "") == {}
    assert registry_build_args({"PIP_INDEX_URL": "file:///opt/wheels"}, lambda _argv: "") == {}
