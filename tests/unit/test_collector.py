"""processor/collector.py: full garbage collections on the processor's timer, CPython's thresholds kept."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

from processor.collector import NEVER_BY_COUNT, FullCollections


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def full_collections() -> Iterator[list[int]]:
    """The generations collected while the test runs (gc.callbacks)."""
    seen: list[int] = []

    def record(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            seen.append(info["generation"])

    before = gc.get_threshold()
    gc.callbacks.append(record)
    try:
        yield seen
    finally:
        gc.callbacks.remove(record)
        assert gc.get_threshold() == before  # every test leaves CPython's thresholds as it found them


def test_a_started_timer_stops_counting_full_collections_and_stopping_restores_cpythons_thresholds(
    full_collections: list[int],
) -> None:
    young, middle, oldest = gc.get_threshold()
    timer = FullCollections(300, Clock())
    timer.start()
    assert gc.get_threshold() == (young, middle, NEVER_BY_COUNT)
    timer.stop()
    assert gc.get_threshold() == (young, middle, oldest)


def test_the_full_collection_runs_when_the_interval_has_passed_and_not_before(full_collections: list[int]) -> None:
    clock = Clock()
    timer = FullCollections(300, clock)
    timer.start()
    try:
        clock.now += 299
        assert timer.tick() is False and 2 not in full_collections
        clock.now += 1
        assert timer.tick() is True and full_collections.count(2) == 1
        clock.now += 10  # counted from the last collection
        assert timer.tick() is False and full_collections.count(2) == 1
    finally:
        timer.stop()


def test_cyclic_garbage_is_collected_by_the_timer(full_collections: list[int]) -> None:
    class Node:
        other: Any = None

    clock = Clock()
    timer = FullCollections(60, clock)
    timer.start()
    gc.disable()  # no automatic young collection may find the cycle first
    try:
        a, b = Node(), Node()
        a.other, b.other = b, a
        alive = weakref.ref(a)
        del a, b
        clock.now += 59
        timer.tick()
        assert alive() is not None  # not due yet: the cycle waits
        clock.now += 1
        assert timer.tick() and alive() is None
    finally:
        gc.enable()
        timer.stop()


def test_two_processors_in_one_process_restore_the_thresholds_only_when_the_last_stops(
    full_collections: list[int],
) -> None:
    cpython = gc.get_threshold()
    first, second = FullCollections(300, Clock()), FullCollections(60, Clock())
    first.start()
    second.start()
    first.stop()
    assert gc.get_threshold()[2] == NEVER_BY_COUNT  # the second still runs
    second.stop()
    assert gc.get_threshold() == cpython
    second.stop()  # stopping twice changes nothing
    assert gc.get_threshold() == cpython


def test_an_interval_of_zero_leaves_cpythons_collections_alone(full_collections: list[int]) -> None:
    cpython = gc.get_threshold()
    clock = Clock()
    timer = FullCollections(0, clock)
    timer.start()
    assert gc.get_threshold() == cpython
    clock.now += 10**6
    assert timer.tick() is False and 2 not in full_collections
    timer.stop()
