"""The demo's business clock (processor/clock.py) and the batch stamping with it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from msgspec.structs import replace

from processor.clock import BusinessClock
from tests.unit.builders import PARTITIONS, UMP_EMP, Feed, bill, enroll, make, pay, rate, run

WALL = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def at(month: int, day: int) -> datetime:
    return datetime(2026, month, day, 9, tzinfo=UTC)


def test_the_business_clock_follows_the_latest_occurred_at_and_never_goes_back() -> None:
    clock = BusinessClock(lambda: WALL)
    assert clock() == WALL  # nothing folded yet: the wall clock
    assert clock.advance([at(3, 1), at(3, 15), at(2, 1)]) == at(3, 15)
    assert clock.advance([at(1, 5)]) == at(3, 15)  # a late event does not move time back
    assert clock.advance([]) == at(3, 15)
    assert clock() == at(3, 15)


def test_the_business_clock_never_runs_past_the_wall_clock() -> None:
    clock = BusinessClock(lambda: WALL)
    assert clock.advance([WALL + timedelta(days=40)]) == WALL


def test_each_event_on_the_business_clock_is_recorded_at_the_business_time_reached_with_it() -> None:
    clock = BusinessClock(lambda: WALL)
    proc, store = make(clock=clock)
    feed = Feed()
    march = [replace(e, occurred_at=at(3, d)) for e, d in
             ((rate(UMP_EMP), 1), (enroll(), 2), (bill(UMP_EMP), 3))]
    run(proc, store, feed.records(*march))  # one batch, three business days
    # the rate is one record per partition
    assert [row.recorded_at for row in store.archive] == [at(3, 1)] * PARTITIONS + [at(3, 2), at(3, 3)]
    run(proc, store, feed.records(replace(pay(UMP_EMP), occurred_at=at(4, 15))))
    assert store.archive[-1].recorded_at == at(4, 15)
    late = replace(pay(UMP_EMP, event_id="pay-late", payment_id="P-LATE"), occurred_at=at(2, 1))
    run(proc, store, feed.records(late))
    assert store.archive[-1].recorded_at == at(4, 15)  # recorded times stay in archive order
    stamps = [row.recorded_at for row in store.archive]
    assert stamps == sorted(stamps)


def test_a_batch_on_the_wall_clock_is_recorded_when_it_is_folded() -> None:
    proc, store = make(clock=lambda: WALL)
    run(proc, store, Feed().records(replace(rate(UMP_EMP), occurred_at=at(3, 1))))
    assert {row.recorded_at for row in store.archive} == {WALL}
