"""A run's steps before its agent starts, as the runner logs them and the bench reads them."""

from __future__ import annotations

import pytest

from runner.phases import Phases, steps_of


def test_the_logged_line_reads_back_as_each_steps_seconds() -> None:
    phases = Phases()
    for step in ("mirror", "disk", "mirror"):  # a step marked again adds up
        phases.mark(step)

    found = steps_of(f"run r-1: agent started after {phases}")

    assert found is not None and list(found) == ["total", "mirror", "disk"]
    assert found["total"] == pytest.approx(sum(phases.steps.values()), abs=0.002)
    assert all(seconds >= 0 for seconds in found.values())


def test_other_lines_are_not_read() -> None:
    assert steps_of("run r-1: claude agent on trimo/p1") is None
