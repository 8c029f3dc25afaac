"""The time the ledger stamps on what it accepts (recorded_at): the wall clock, or, for the demo only, a
clock that follows the business time of the program it folds."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime


def wall_clock() -> datetime:
    return datetime.now(UTC)


class BusinessClock:
    """Demo only (setting ``demo_clock``, which ``up`` refuses). The demo publishes a year of business in
    a minute; stamped by the wall clock, every event would be recorded within the same few seconds and
    "March as known on April 15" would replay nothing. The processor advances this clock with each
    event it folds and records the event at the latest ``occurred_at`` reached so far: in archive order
    it never goes back, and it never runs past the wall clock (the demo's program may run past today:
    those events are recorded now, as the wall clock says). Before the first event it reads the wall
    clock (a dead letter of the first batch)."""

    def __init__(self, wall: Callable[[], datetime] = wall_clock) -> None:
        self._wall = wall
        self._now: datetime | None = None

    def __call__(self) -> datetime:
        return self._now if self._now is not None else self._wall()

    def advance(self, occurred: Iterable[datetime]) -> datetime:
        """Move to the latest of ``occurred`` (capped by the wall clock, never back); the time now."""
        latest = max(occurred, default=None)
        if latest is not None:
            candidate = min(latest, self._wall())
            if self._now is None or candidate > self._now:
                self._now = candidate
        return self()
