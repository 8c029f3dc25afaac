"""The archive reader: every applied event, streamed in applied order (``archive.seq``).

The rows come out of PostgreSQL through ``COPY (SELECT ...) TO STDOUT (FORMAT BINARY)``, which psycopg
hands over in chunks as they arrive, so a replay of the whole archive never holds all events at once.
"""

from __future__ import annotations

from collections.abc import Generator
from datetime import datetime
from typing import Any

import msgspec
import psycopg

_COLUMNS = "seq, partition, event_id, event_type, account_id, recorded_at, body, body_hash"
_TYPES = ["int8", "int4", "text", "text", "text", "timestamptz", "bytea", "bytea"]


class ArchivedEvent(msgspec.Struct, frozen=True, gc=False):
    """One archive row as replay needs it; ``body`` is the canonical JSON the processor stored."""

    seq: int
    partition: int
    event_id: str
    event_type: str
    account_id: str
    recorded_at: datetime
    body: bytes
    body_hash: bytes = b""


def connect(dsn: str) -> psycopg.Connection[tuple[Any, ...]]:
    """A read-only connection of its own (the long COPY must not hold the store's connection)."""
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute("SET TIME ZONE 'UTC'")
    conn.autocommit = False
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    return conn


def partition_bounds(
    conn: psycopg.Connection[tuple[Any, ...]], known_at: datetime, partitions: list[int] | None = None,
) -> dict[int, int]:
    """Per partition, the seq to stop after: the event with the latest recorded_at at or before
    ``known_at`` (the later seq on a tie). Partitions fold independently, so "stop after the last event
    recorded at or before R" is decided per partition: a partition's prefix is what its worker had
    committed by then. One index probe per partition (archive_partition_recorded_idx), no scan.
    """
    if partitions is None:
        partitions = [int(r[0]) for r in conn.execute("SELECT partition FROM archive_chain_head ORDER BY 1")]
    bounds: dict[int, int] = {}
    for p in partitions:
        row = conn.execute(
            "SELECT seq FROM archive WHERE partition = %s AND recorded_at <= %s"
            " ORDER BY recorded_at DESC, seq DESC LIMIT 1", (p, known_at)
        ).fetchone()
        if row is not None:
            bounds[p] = int(row[0])
    return bounds


def read_archive(
    conn: psycopg.Connection[tuple[Any, ...]], *, known_at: datetime | None = None,
    account_id: str | None = None,
) -> Generator[ArchivedEvent, None, None]:
    """Stream archived events in seq order; with ``known_at``, only each partition's prefix up to the
    last event recorded at or before it. ``account_id`` restricts to that account's events and the
    broadcast copies of its partition (what one account's fold needs)."""
    where: list[str] = []
    params: list[Any] = []
    bounds: dict[int, int] | None = None
    account_partition: int | None = None
    if account_id is not None:
        row = conn.execute(
            "SELECT partition FROM archive WHERE account_id = %s ORDER BY recorded_at LIMIT 1", (account_id,)
        ).fetchone()
        if row is None:
            return
        account_partition = int(row[0])
        where.append("(account_id = %s OR (account_id = '*' AND partition = %s))")
        params.extend([account_id, account_partition])
    if known_at is not None:
        bounds = partition_bounds(conn, known_at, None if account_partition is None else [account_partition])
        if not bounds:
            return
        where.append("seq <= %s")
        params.append(max(bounds.values()))
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    query = f"COPY (SELECT {_COLUMNS} FROM archive{clause} ORDER BY seq) TO STDOUT (FORMAT BINARY)"
    with conn.cursor() as cur, cur.copy(query.encode(), params or None) as copy:
        copy.set_types(_TYPES)
        for seq, partition, event_id, event_type, account, recorded_at, body, digest in copy.rows():
            if bounds is not None and seq > bounds.get(partition, -1):
                continue
            yield ArchivedEvent(seq, partition, event_id, event_type, account, recorded_at, bytes(body),
                                bytes(digest))


def archive_partitions(conn: psycopg.Connection[tuple[Any, ...]]) -> list[int]:
    """Every partition with archived events: one index probe per partition (a rebuild's scratch copy of
    the archive has no chain heads to ask)."""
    rows = conn.execute(
        "WITH RECURSIVE p(partition) AS (SELECT min(partition) FROM archive UNION ALL"
        " SELECT (SELECT min(partition) FROM archive WHERE partition > p.partition) FROM p"
        " WHERE p.partition IS NOT NULL) SELECT partition FROM p WHERE partition IS NOT NULL"
    ).fetchall()
    return [int(r[0]) for r in rows]


AccountRange = tuple[str | None, str | None]  # account ids from (inclusive) to (exclusive); None: open


def _bounded(partition: int, through_seq: int | None, accounts: AccountRange | None,
             account_ids: list[str] | None = None) -> tuple[str, list[Any]]:
    where = "partition = %s"
    params: list[Any] = [partition]
    if account_ids is not None:
        where += " AND account_id = ANY(%s)"
        params.append(account_ids)
    if through_seq is not None:
        where += " AND seq <= %s"
        params.append(through_seq)
    lo, hi = accounts or (None, None)
    if lo is not None:
        where += " AND account_id >= %s"
        params.append(lo)
    if hi is not None:
        where += " AND account_id < %s"
        params.append(hi)
    return where, params


def read_broadcasts(
    conn: psycopg.Connection[tuple[Any, ...]], partition: int, *, through_seq: int | None = None,
) -> list[ArchivedEvent]:
    """A partition's broadcast events (rates, business days, billing cycles), in seq order (a range of
    archive_partition_account_seq_idx). A few per business day of history: held while it replays."""
    where, params = _bounded(partition, through_seq, None)
    rows = conn.execute(f"SELECT {_COLUMNS} FROM archive WHERE {where} AND account_id = '*' ORDER BY seq".encode(),
                        params, binary=True).fetchall()
    return [ArchivedEvent(int(seq), int(p), e, t, a, r, bytes(b), bytes(h)) for seq, p, e, t, a, r, b, h in rows]


def read_accounts(
    conn: psycopg.Connection[tuple[Any, ...]], partition: int, *, through_seq: int | None = None,
    accounts: AccountRange | None = None, account_ids: list[str] | None = None, fetch_rows: int = 2000,
) -> Generator[ArchivedEvent, None, None]:
    """A partition's account events, account after account and each account's in seq order, from a
    cursor on the connection's transaction (so the caller may query the same snapshot meanwhile).
    ``accounts``: only the account ids in that range; ``account_ids``: only those."""
    where, params = _bounded(partition, through_seq, accounts, account_ids)
    query = f"SELECT {_COLUMNS} FROM archive WHERE {where} AND account_id <> '*' ORDER BY account_id, seq"
    with conn.cursor(name=f"replay_accounts_{partition}", binary=True) as cur:
        cur.itersize = fetch_rows
        cur.execute(query.encode(), params)
        for seq, p, event_id, event_type, account, recorded_at, body, digest in cur:
            yield ArchivedEvent(seq, p, event_id, event_type, account, recorded_at, body, digest)


def archive_size(conn: psycopg.Connection[tuple[Any, ...]]) -> int:
    row = conn.execute("SELECT count(*) FROM archive").fetchone()
    return 0 if row is None else int(row[0])
