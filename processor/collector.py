"""When the cyclic garbage collector does a full collection in a processor: on a timer, not by allocations.

CPython collects its oldest generation when the objects that survived into it since the last full
collection reach a quarter of those that were there, and a full collection visits every tracked object.
A processor's account cache is most of its heap, and every account it loads (the cache is bounded by
bytes, so the longer the history the more accounts are loaded) adds survivors: full collections then run
every few seconds and each visits the whole cache. At 84 months of history with a cache that holds a
fifth of the accounts, they were half of the processor's CPU (about 300 of 700 µs/event; bench/history.py
has the cold case).

The fold state holds no reference cycles (processor/state.py: plain data, its parts ``gc=False``), so
nothing of it waits for the collector: refcounting frees an evicted account at once. The only cyclic
garbage is the rare cycle from clients and exceptions, and collecting it on a timer bounds how long it
waits. Young generations are collected as usual (cheap: they hold only what was allocated lately).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

from processor import metrics

log = logging.getLogger(__name__)

# The oldest generation's threshold while the timer decides: never reached by counting gen-1 collections.
NEVER_BY_COUNT = 2**31 - 1

# Thresholds are the process's: the first FullCollections started keeps CPython's, the last stopped
# puts them back (tests and the demo run several loops in one process).
_running = 0
_saved: tuple[int, int, int] | None = None


class FullCollections:
    """Moves the full collection from CPython's allocation heuristic to a timer of ``interval_seconds``
    (0: leave CPython's heuristic alone). ``start`` and ``stop`` bracket the processor's run; ``tick``
    after each batch runs the full collection when it is due."""

    def __init__(self, interval_seconds: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_seconds = interval_seconds
        self._clock = clock
        self._started = False
        self._last = clock()

    def start(self) -> None:
        global _running, _saved
        if self.interval_seconds <= 0 or self._started:
            return
        if _running == 0:
            _saved = gc.get_threshold()
            young, middle, _ = _saved
            gc.set_threshold(young, middle, NEVER_BY_COUNT)
        _running += 1
        self._started = True
        self._last = self._clock()

    def tick(self) -> bool:
        """Collect everything if the interval has passed since the last full collection; True if it did."""
        if not self._started or self._clock() - self._last < self.interval_seconds:
            return False
        started = time.process_time()
        found = gc.collect()
        seconds = time.process_time() - started
        self._last = self._clock()
        metrics.GC_FULL_SECONDS.observe(seconds)
        log.debug("full garbage collection: %d unreachable objects, %.3f s of CPU", found, seconds)
        return True

    def stop(self) -> None:
        """CPython's own thresholds again once no processor of the process runs."""
        global _running, _saved
        if not self._started:
            return
        self._started = False
        _running -= 1
        if _running == 0 and _saved is not None:
            gc.set_threshold(*_saved)
            _saved = None
