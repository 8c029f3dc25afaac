"""Outages: wait for PostgreSQL or the broker with backoff, for a bounded time, and say what we wait for.

An outage within ``outage_retry_seconds_max`` loses nothing and needs no restart: the processor
forgets what it folded but did not commit and starts again from the positions in PostgreSQL, the
relay publishes what is still in the outbox. Past the bound the ledger stops with ``OutageStop``
(exit code 3) and one line that names the service, how long it waited and the last error.

Only errors that mean "the service is not there" are waited for; any other error is a bug or bad data
and is not retried here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from processor.stops import OutageStop

T = TypeVar("T")

BACKOFF_FIRST_S = 0.2
BACKOFF_MAX_S = 5.0
STILL_WAITING_EVERY_S = 30.0  # one "still waiting" line this often, however fast the retries


def is_database_outage(exc: BaseException) -> bool:
    """PostgreSQL is down, restarting, refusing connections or dropped ours (psycopg OperationalError,
    which also covers admin and crash shutdown, "the database system is starting up", disk full)."""
    import psycopg

    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


def is_broker_outage(exc: BaseException) -> bool:
    """The broker is unreachable or answers with a transient error (aiokafka or kafka-python)."""
    import aiokafka.errors as ae
    import kafka.errors as ke

    if isinstance(exc, ae.KafkaConnectionError | ae.KafkaTimeoutError | ae.NodeNotReadyError
                  | ae.RequestTimedOutError | ae.UnknownError | ae.KafkaUnavailableError
                  | ke.KafkaConnectionError | ke.KafkaTimeoutError
                  | ConnectionError | TimeoutError):
        return True
    return isinstance(exc, ae.KafkaError | ke.KafkaError) and bool(getattr(exc, "retriable", False))


class Outage:
    """The state of waiting for one service: since when, how often, what to log."""

    def __init__(
        self, what: str, seconds_max: float, log: logging.Logger, *, setting: str = "outage_retry_seconds_max",
    ) -> None:
        self.what = what
        self.seconds_max = seconds_max
        self.setting = setting
        self.log = log
        self.since: float | None = None
        self.attempts = 0
        self._logged_at = 0.0
        self.last_error: BaseException | None = None

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException) -> float:
        """Note a failed attempt; the seconds to wait before the next one. Raises OutageStop past the bound."""
        now = time.monotonic()
        self.last_error = exc
        error = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
        if self.since is None:
            self.since = now
            self._logged_at = now
            self.log.warning("waiting for %s (%s): retrying with backoff for up to %.0f s (%s)",
                             self.what, error, self.seconds_max, self.setting)
        elapsed = now - self.since
        if elapsed >= self.seconds_max:
            raise OutageStop(
                f"{self.what} unavailable for {elapsed:.0f} s ({self.setting}={self.seconds_max:.0f}); last error:"
                f" {error}. Nothing was lost: what was not committed is redone from the positions in PostgreSQL."
                f" Start `benefits-ledger up` again once {self.what} is back."
            ) from exc
        if now - self._logged_at >= STILL_WAITING_EVERY_S:
            self._logged_at = now
            self.log.warning("still waiting for %s: %.0f of %.0f s (%s)", self.what, elapsed, self.seconds_max, error)
        delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** min(self.attempts, 10))
        self.attempts += 1
        return max(0.0, min(delay, self.seconds_max - elapsed))

    def recovered(self) -> None:
        if self.since is not None:
            self.log.warning("%s is back after %.1f s", self.what, time.monotonic() - self.since)
        self.since = None
        self.attempts = 0
        self.last_error = None


def retry_sync(outage: Outage, fn: Callable[[], T], is_outage: Callable[[BaseException], bool]) -> T:
    """``fn()``, retried with backoff while it fails with an outage error (at startup, before the event loop)."""
    while True:
        try:
            result = fn()
        except Exception as exc:
            if not is_outage(exc):
                raise
            time.sleep(outage.failed(exc))
            continue
        outage.recovered()
        return result


async def retry_async(outage: Outage, fn: Callable[[], Awaitable[T]], is_outage: Callable[[BaseException], bool]) -> T:
    """``await fn()``, retried with backoff while it fails with an outage error."""
    while True:
        try:
            result = await fn()
        except Exception as exc:
            if not is_outage(exc):
                raise
            await asyncio.sleep(outage.failed(exc))
            continue
        outage.recovered()
        return result


class RepeatFilter(logging.Filter):
    """Lets a repeated log message (same logger, same format string) through at most once per
    ``window_s``, noting how many were held back: a dead broker makes aiokafka log an error per retry.
    A client library's traceback becomes one line (the exception's type and text): a connection reset is
    an outage the ledger reports itself, not a bug to debug."""

    def __init__(self, window_s: float = 60.0) -> None:
        super().__init__()
        self.window_s = window_s
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = time.monotonic()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self.window_s:
            self._seen[key] = (last[0], last[1] + 1)
            return False
        held = last[1] if last is not None else 0
        self._seen[key] = (now, 0)
        if len(self._seen) > 1000:  # bounded: forget the oldest half
            for old in sorted(self._seen, key=lambda k: self._seen[k][0])[:500]:
                del self._seen[old]
        if record.exc_info:
            exc = record.exc_info[1]
            text = f"{type(exc).__name__}: {exc}"
            record.msg = f"{record.msg} ({text.replace('%', '%%') if record.args else text})"
            record.exc_info, record.exc_text = None, None
        if held:
            record.msg = f"{record.msg} [{held} more like this in the last {self.window_s:.0f} s not shown]"
        return True


def quiet_repeats(prefixes: tuple[str, ...] = ("aiokafka", "kafka"), window_s: float = 60.0) -> RepeatFilter:
    """Install one RepeatFilter on every logger under the prefixes (filters do not inherit)."""
    flt = RepeatFilter(window_s)
    names = [n for n in logging.Logger.manager.loggerDict if n.split(".")[0] in prefixes]
    for name in [*prefixes, *names]:
        logging.getLogger(name).addFilter(flt)
    return flt
