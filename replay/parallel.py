"""Replay split over worker processes by partition, all reading one exported snapshot.

Partitions fold independently (an account lives on one partition; rates and business days are
broadcast to every partition), and so do the accounts of one partition (replay/stream.py): a task is a
partition, or a range of its account ids when there are fewer partitions than four per worker (so the
workers take small tasks as they come free and finish together). Each task streams its accounts a group
at a time through a consumer built in the worker (compare with live, write, count), so what comes back
is small: totals and what the consumer reports, never the accounts. Every task reads the coordinator's
snapshot (``pg_export_snapshot``), so the parts form one consistent archive prefix, the same one the
coordinator then compares the live tables against.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Protocol

import psycopg

from processor.settings import PlanSettings
from replay.archive import AccountRange, archive_partitions
from replay.stream import ACCOUNTS_MAX, BYTES_MAX, Consumer, GroupResult, PartitionResult, StreamTotals, stream_archive

SAMPLE_ROWS = 20_000  # account ids sampled to cut a partition into ranges of about equal work
TASKS_PER_WORKER = 4
# A worker process takes about half a second to start and import the ledger: below this many archived
# events per process, fewer processes finish sooner (a small archive replays in the caller's process).
EVENTS_PER_PROCESS_MIN = 200_000


class WorkerConsumer(Consumer, Protocol):
    def outcome(self) -> Any: ...


class Discard:
    """Keeps nothing of the groups (the totals are kept anyway): a replay that only counts."""

    def group(self, group: GroupResult) -> None:
        pass

    def partition(self, part: PartitionResult) -> None:
        pass

    def outcome(self) -> None:
        return None


def discard(_conn: psycopg.Connection[tuple[Any, ...]]) -> Discard:
    return Discard()


Task = tuple[int, AccountRange | None]


def _task(dsn: str, snapshot: str, task: Task, plan_json: str, strict: bool,
          consumer: Callable[[psycopg.Connection[tuple[Any, ...]]], WorkerConsumer], accounts_max: int,
          bytes_max: int) -> tuple[StreamTotals, Any]:
    """Worker: one partition (or a range of its accounts) as of the exported snapshot."""
    plan = PlanSettings.model_validate_json(plan_json)
    partition, accounts = task
    with at_snapshot(dsn, snapshot) as conn:
        sink = consumer(conn)
        totals = stream_archive(conn, plan, sink, partitions=[partition], accounts=accounts, strict=strict,
                                accounts_max=accounts_max, bytes_max=bytes_max)
        outcome = sink.outcome()
    return totals, outcome


@contextlib.contextmanager
def at_snapshot(dsn: str, snapshot: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    """A read-only REPEATABLE READ connection (UTC) that sees exactly the exported ``snapshot``."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        conn.autocommit = False
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        conn.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'".encode())
        try:
            yield conn
        finally:
            conn.rollback()


def archived_events(conn: psycopg.Connection[tuple[Any, ...]]) -> int:
    """About how many events the archive holds (the planner's estimate; counted when it has none)."""
    row = conn.execute("SELECT reltuples FROM pg_class WHERE oid = 'archive'::regclass").fetchone()
    if row is not None and float(row[0]) >= 0:
        return int(row[0])
    counted = conn.execute("SELECT count(*) FROM archive").fetchone()
    return 0 if counted is None else int(counted[0])


def plan_tasks(conn: psycopg.Connection[tuple[Any, ...]], workers: int) -> list[Task]:
    """A task per partition; with fewer partitions than four per worker, each is cut into account
    ranges at account ids sampled from the archive (any cut is exact; a sample makes them even)."""
    parts = archive_partitions(conn)
    if workers < 2:
        return [(p, None) for p in parts]
    wanted = TASKS_PER_WORKER * workers
    slices = -(-wanted // len(parts)) if parts and len(parts) < wanted else 1
    if slices == 1:
        return [(p, None) for p in parts]
    tasks: list[Task] = []
    percent = min(100.0, 100.0 * SAMPLE_ROWS * len(parts) / max(1, archived_events(conn)))
    for p in parts:
        ids = sorted(str(r[0]) for r in conn.execute(
            "SELECT account_id FROM archive TABLESAMPLE SYSTEM (%s) REPEATABLE (0)"
            " WHERE partition = %s AND account_id <> '*'", (percent, p)))
        cuts = sorted({ids[len(ids) * i // slices] for i in range(1, slices)} if len(ids) >= slices else set())
        bounds: list[str | None] = [None, *cuts, None]
        tasks.extend((p, (lo, hi)) for lo, hi in itertools.pairwise(bounds))
    return tasks


def replay_parallel(
    conn: psycopg.Connection[tuple[Any, ...]], dsn: str, plan: PlanSettings, *, workers: int = 2,
    strict: bool = True, consumer: Callable[[psycopg.Connection[tuple[Any, ...]]], WorkerConsumer] = discard,
    accounts_max: int = ACCOUNTS_MAX, bytes_max: int = BYTES_MAX,
    events_per_process_min: int | None = None,
) -> tuple[StreamTotals, list[Any]]:
    """Replay the archive visible to ``conn``'s (REPEATABLE READ) transaction with up to ``workers``
    processes (one per ``events_per_process_min`` archived events, default EVENTS_PER_PROCESS_MIN; a small
    archive in this process, on ``conn``); ``consumer(conn)`` (a module-level function: it is sent to the
    workers) builds each task's consumer. Returns the totals of every task and what each task's consumer
    reported (``outcome()``)."""
    per_process = EVENTS_PER_PROCESS_MIN if events_per_process_min is None else events_per_process_min
    workers = min(workers, max(1, archived_events(conn) // max(1, per_process)))
    totals = StreamTotals()
    outcomes: list[Any] = []
    if workers < 2:
        sink = consumer(conn)
        stream_archive(conn, plan, sink, strict=strict, accounts_max=accounts_max, bytes_max=bytes_max,
                       totals=totals)
        return totals, [sink.outcome()]
    row = conn.execute("SELECT pg_export_snapshot()").fetchone()
    assert row is not None
    snapshot = str(row[0])
    tasks = plan_tasks(conn, workers)
    if not tasks:
        return totals, outcomes
    context = multiprocessing.get_context("spawn")  # no inherited connections in the children
    totals.processes = min(workers, len(tasks))
    with ProcessPoolExecutor(max_workers=totals.processes, mp_context=context) as pool:
        futures = [pool.submit(_task, dsn, snapshot, task, plan.model_dump_json(), strict, consumer, accounts_max,
                               bytes_max) for task in tasks]
        for future in futures:
            part, outcome = future.result()
            totals.merge(part)
            outcomes.append(outcome)
    return totals, outcomes
