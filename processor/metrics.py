"""Prometheus metrics of the processor and the relay (prometheus-client, the default registry).

Counts come from each committed batch's ``BatchResult`` (its position advances carry applied,
duplicates and dead-lettered per topic and partition), never from inside the fold; so, per topic,
received = applied + duplicates + dead-lettered holds for the metrics as it does for the positions table.
The database gauges (outbox backlog and age, open discrepancies by kind) are refreshed by the loops at
most every ``DB_REFRESH_S`` seconds, on the loop's own store connection. The process collector of
prometheus-client gives the resident memory (``process_resident_memory_bytes``).
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from processor.batch import BatchResult

DB_REFRESH_S = 5.0

RECEIVED = Counter("ledger_records_received", "input records received and committed, by topic", ["topic"])
APPLIED = Counter("ledger_records_applied", "input records applied to the books, by topic", ["topic"])
DUPLICATES = Counter("ledger_records_duplicate", "exact duplicates counted and skipped, by topic", ["topic"])
DEAD_LETTERED = Counter("ledger_records_dead_lettered", "records sent to the dead-letter topic, by topic", ["topic"])
BATCHES = Counter("ledger_batches", "batches committed")
BATCH_SIZE = Histogram(
    "ledger_batch_records", "records per committed batch",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 100_000),
)
COMMIT_SECONDS = Histogram(
    "ledger_commit_seconds", "time of one batch's PostgreSQL transaction",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
LAG = Gauge("ledger_consumer_lag_records",
            "records between the applied position and the partition's high-water mark (from the fetch response)",
            ["topic", "partition"])
GC_FULL_SECONDS = Histogram(
    "ledger_gc_full_collection_seconds", "CPU of one full garbage collection, run on a timer (processor/collector.py)",
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
CACHE_ACCOUNTS = Gauge("ledger_account_cache_accounts", "accounts held in the processor's cache")
OUTBOX_BACKLOG = Gauge("ledger_outbox_backlog_rows", "outbox rows not yet published")
OUTBOX_AGE = Gauge("ledger_outbox_oldest_age_seconds", "age of the oldest unpublished outbox row (0 when empty)")
OUTBOX_PUBLISHED = Counter("ledger_outbox_published", "outbox rows the relay published, by topic", ["topic"])
OPEN_DISCREPANCIES = Gauge("ledger_discrepancies_open", "open discrepancies by kind", ["kind"])


def record_batch(result: BatchResult, commit_seconds: float) -> None:
    """Count one committed batch."""
    total = 0
    for p in result.write.positions:
        RECEIVED.labels(p.topic).inc(p.applied + p.duplicates + p.dead_lettered)
        APPLIED.labels(p.topic).inc(p.applied)
        DUPLICATES.labels(p.topic).inc(p.duplicates)
        DEAD_LETTERED.labels(p.topic).inc(p.dead_lettered)
        total += p.applied + p.duplicates + p.dead_lettered
    BATCHES.inc()
    BATCH_SIZE.observe(total)
    COMMIT_SECONDS.observe(commit_seconds)


def record_lag(topic: str, partition: int, highwater: int | None, position: int) -> None:
    if highwater is not None:
        LAG.labels(topic, str(partition)).set(max(0, highwater - position))


def forget_partitions(tps: Any) -> None:
    """Partitions revoked from this worker: another one reports their lag now."""
    for tp in tps:
        try:
            LAG.remove(tp.topic, str(tp.partition))
        except KeyError:
            pass


_OUTBOX = ("SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8"
           " FROM outbox WHERE published_at IS NULL")
_OPEN = "SELECT kind, count(*) FROM discrepancy WHERE status = 'open' GROUP BY kind"


class DatabaseGauges:
    """Refreshes the gauges read from PostgreSQL, at most every ``interval_s``; the store's dsn is used
    for a connection of its own (not the store's, which a batch commit may hold)."""

    def __init__(self, store: Any, *, interval_s: float = DB_REFRESH_S) -> None:
        self.dsn: str | None = getattr(store, "dsn", None)
        self.interval_s = interval_s
        self._next = 0.0
        self._conn: Any = None

    def due(self) -> bool:
        return self.dsn is not None and time.monotonic() >= self._next

    def refresh(self) -> None:
        """Blocking (run it in a thread); a failure leaves the gauges as they were and is raised."""
        import psycopg

        if self.dsn is None:
            return
        self._next = time.monotonic() + self.interval_s
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self.dsn, autocommit=True)
        backlog, age = self._conn.execute(_OUTBOX).fetchone()
        OUTBOX_BACKLOG.set(int(backlog))
        OUTBOX_AGE.set(float(age))
        kinds = dict(self._conn.execute(_OPEN).fetchall())
        from events.types import DISCREPANCY_KINDS

        for kind in DISCREPANCY_KINDS:
            OPEN_DISCREPANCIES.labels(kind).set(int(kinds.get(kind, 0)))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
