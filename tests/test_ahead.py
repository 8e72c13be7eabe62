"""Things made ahead wait for the runs on their way to their agent (runner.ahead, runner.phases).

Making a spare network or sandbox while a run starts would queue that run's container start
behind it in Docker. Spares are made once no run has taken one for a moment and no run is
starting, so a run that follows another at once can still find one ready.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from runner import ahead
from runner import phases as phases_module
from runner.ahead import MadeAhead
from runner.phases import Phases, starting

DEADLINE = 10.0


class Made:
    """What a MadeAhead made and discarded (numbers, never handed out twice)."""

    def __init__(self) -> None:
        self.numbers = itertools.count(1)
        self.made: list[int] = []
        self.discarded: list[int] = []
        self.lock = threading.Lock()

    def make(self) -> int:
        with self.lock:
            number = next(self.numbers)
            self.made.append(number)
            return number

    def discard(self, number: int) -> None:
        with self.lock:
            self.discarded.append(number)


@pytest.fixture
def made() -> Made:
    return Made()


@pytest.fixture
def spares(made: Made) -> Iterator[MadeAhead[int]]:
    spares = MadeAhead(made.make, made.discard, keep=2, quiet=0.05)
    yield spares
    spares.close()


@pytest.fixture
def looked(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many runs were starting each time the spares' upkeep looked."""
    seen: list[int] = []

    def counted() -> int:
        seen.append(starting())
        return seen[-1]

    monkeypatch.setattr(ahead, "starting", counted)
    return seen


def eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"not within {DEADLINE:g} s: {what}"
        time.sleep(0.01)


def test_nothing_is_made_while_a_run_is_on_its_way_to_its_agent(
    spares: MadeAhead[int], made: Made, looked: list[int]
) -> None:
    run = Phases()
    spares.fill()
    eventually(lambda: len(looked) >= 3, "the upkeep to look three times")
    assert made.made == []
    assert min(looked) >= 1
    run.over()
    eventually(lambda: len(spares.ready()) == 2, "two spares once the run's agent started")


def test_a_run_that_takes_one_gets_it_and_a_new_one_is_made_after_its_start(
    spares: MadeAhead[int], made: Made, looked: list[int]
) -> None:
    spares.fill()
    eventually(lambda: len(spares.ready()) == 2, "two spares")
    run = Phases()
    first = spares.take()
    second = spares.take()
    assert {first, second} == {1, 2}
    looked.clear()
    eventually(lambda: len(looked) >= 3, "the upkeep to look three times")
    assert made.made == [1, 2], "a spare was made while the run started"
    run.over()
    eventually(lambda: len(spares.ready()) == 2, "the spares made again")
    spares.done(first)
    spares.done(second)
    eventually(lambda: sorted(made.discarded) == [1, 2], "the taken ones discarded")
    assert not set(spares.ready()) & {first, second}, "a spare was handed out twice"


def test_a_start_that_lasts_too_long_no_longer_holds_the_spares_back(
    spares: MadeAhead[int], made: Made, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(phases_module, "START_SECONDS", 0.2)
    stuck = Phases()
    spares.fill()
    eventually(lambda: len(spares.ready()) == 2, "spares despite a start stuck for ever")
    assert starting() == 0
    stuck.over()


def test_a_start_is_over_when_its_record_is_gone() -> None:
    before = starting()
    run = Phases()
    assert starting() == before + 1
    del run
    assert starting() == before
