"""Splitting a container's output into lines: bounded, whatever the agent prints."""

from __future__ import annotations

from runner.container import split_lines


def test_lines_across_chunks() -> None:
    assert list(split_lines([b"ab", b"c\nde", b"f\n", b"g"])) == ["abc", "def", "g"]


def test_crlf_and_empty_lines() -> None:
    assert list(split_lines([b"a\r\n\nb\n"])) == ["a", "", "b"]


def test_a_line_without_end_is_cut_and_the_rest_dropped() -> None:
    chunks = [b"x" * 4] * 1000 + [b"tail\nnext\n"]
    assert list(split_lines(chunks, max_bytes=10)) == ["x" * 10 + " …(line cut)", "next"]


def test_broken_utf8_never_raises() -> None:
    assert list(split_lines([b"\xff\xfe ok\n"])) == ["\ufffd\ufffd ok"]
