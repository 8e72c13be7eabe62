"""Docker's following log stream can end before the container's log does: the run still gets
every line, once and in order (a Docker double that ends the stream early; the real race is
in test_container_lines)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import docker.errors
import pytest

from runner.container import AgentContainer


def stamped(texts: list[bytes]) -> list[bytes]:
    """`texts` as Docker gives them with timestamps=True: one stamped message each."""
    return [b"2026-12-07T13:05:01.%09dZ %s" % (i, text) for i, text in enumerate(texts)]


class LogDouble:
    """A container whose following stream gives only the first `followed` messages of its
    log, as Docker 20.10's does now and then when the container exits."""

    def __init__(self, texts: list[bytes], followed: int, fail_after: bool = False) -> None:
        self.messages = stamped(texts)
        self.followed = followed
        self.fail_after = fail_after
        self.reads: list[str] = []

    def logs(self, **kwargs: Any) -> Any:
        if not kwargs["stderr"]:  # first_line: stdout alone, unstamped
            given = self.messages[: self.followed] if kwargs["follow"] else self.messages
            return Closable(m.partition(b" ")[2] for m in given)
        assert kwargs["timestamps"] and kwargs["stdout"]
        if kwargs.get("follow"):
            self.reads.append("follow")
            return iter(self.messages[: self.followed])
        if self.fail_after:
            raise docker.errors.APIError("the daemon went away")
        if kwargs.get("tail") == 1:
            self.reads.append("last")
            return self.messages[-1] if self.messages else b""
        self.reads.append("whole")
        return iter(self.messages)


class Closable(list[bytes]):
    """A stream docker-py gives: iterable, and closed when done with."""

    def __init__(self, messages: Iterable[bytes]) -> None:
        super().__init__(messages)
        self.closed = False

    def close(self) -> None:
        self.closed = True


def box_of(double: LogDouble) -> AgentContainer:
    box = AgentContainer.__new__(AgentContainer)
    box._container = double
    return box


def lines_of(double: LogDouble) -> list[str]:
    return list(box_of(double).lines())


def numbers(count: int) -> list[bytes]:
    return [b"%d\n" % i for i in range(count)]


@pytest.mark.parametrize("followed", [0, 1, 6_960, 19_999])
def test_a_stream_that_ends_early_loses_no_line(followed: int) -> None:
    double = LogDouble(numbers(20_000), followed)
    assert lines_of(double) == [str(i) for i in range(20_000)]
    assert double.reads == ["follow", "last", "whole"]


def test_a_whole_stream_is_not_read_again() -> None:
    double = LogDouble(numbers(500), 500)
    assert lines_of(double) == [str(i) for i in range(500)]
    assert double.reads == ["follow", "last"]


def test_a_missing_last_line_that_repeats_the_one_before_is_still_given() -> None:
    double = LogDouble([b"done\n", b"done\n"], 1)
    assert lines_of(double) == ["done", "done"]


def test_a_missing_last_line_without_a_newline_is_given() -> None:
    double = LogDouble([b"one\n", b"I am here"], 1)
    assert lines_of(double) == ["one", "I am here"]


def test_a_long_line_split_by_docker_is_joined_across_the_two_reads() -> None:
    double = LogDouble([b"x" * 16384, b"x" * 100 + b"\n", b"after\n"], 1)
    assert lines_of(double) == ["x" * 16484, "after"]


def test_an_empty_log_gives_nothing() -> None:
    assert lines_of(LogDouble([], 0)) == []


def test_docker_failing_after_the_stream_keeps_what_was_given() -> None:
    double = LogDouble(numbers(10), 4, fail_after=True)
    assert lines_of(double) == ["0", "1", "2", "3"]


@pytest.mark.parametrize("followed", [0, 1])
def test_the_first_line_is_read_even_when_the_stream_ends_before_it(followed: int) -> None:
    """A workspace was taken for broken when the stream ended before the status line."""
    assert box_of(LogDouble([b"trimo:workspace-ready\n", b"hi\n"], followed)).first_line() == (
        "trimo:workspace-ready"
    )


def test_a_container_that_wrote_nothing_has_no_first_line() -> None:
    assert box_of(LogDouble([], 0)).first_line() == ""
