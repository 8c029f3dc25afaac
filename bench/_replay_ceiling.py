"""The replay ceiling: what N processes can do with the archive short of folding it.

Each process reads the coordinator's exported snapshot, COPYs its partitions' rows out in seq order (the
query and columns replay/parallel.py reads) and decodes every body with the codec the replay uses; it
folds nothing and sends back only a count. Same process start-up (spawn), same partition split.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import psycopg

from events import codec
from replay.archive import ArchivedEvent
from replay.parallel import at_snapshot

_COLUMNS = "seq, partition, event_id, event_type, account_id, recorded_at, body, body_hash"
_TYPES = ["int8", "int4", "text", "text", "text", "timestamptz", "bytea", "bytea"]


def _decode_partitions(dsn: str, snapshot: str, partitions: list[int]) -> int:
    """Worker: COPY out and decode the given partitions as of the snapshot; returns the rows read."""
    decode = codec.decode_input
    n = 0
    with at_snapshot(dsn, snapshot) as conn:  # the replay workers' very connection
        query = (f"COPY (SELECT {_COLUMNS} FROM archive WHERE partition = ANY(%s::int[]) ORDER BY seq)"
                 " TO STDOUT (FORMAT BINARY)")
        with conn.cursor() as cur, cur.copy(query.encode(), (partitions,)) as copy:
            copy.set_types(_TYPES)
            for seq, partition, event_id, event_type, account, recorded_at, body, digest in copy.rows():
                row = ArchivedEvent(seq, partition, event_id, event_type, account, recorded_at, bytes(body),
                                    bytes(digest))
                decode(row.body)
                n += 1
    return n


def decode_parallel(conn: psycopg.Connection[tuple[Any, ...]], dsn: str, *, workers: int) -> int:
    """COPY out and decode the archive visible to ``conn``'s transaction in ``workers`` processes,
    partitions split as replay.parallel.replay_parallel splits them."""
    row = conn.execute("SELECT pg_export_snapshot()").fetchone()
    assert row is not None
    snapshot = str(row[0])
    parts = [int(r[0]) for r in conn.execute("SELECT DISTINCT partition FROM archive_chain_head ORDER BY 1")]
    groups = [parts[i::workers] for i in range(workers) if parts[i::workers]]
    if not groups:
        return 0
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=len(groups), mp_context=context) as pool:
        futures = [pool.submit(_decode_partitions, dsn, snapshot, g) for g in groups]
        return sum(f.result() for f in futures)
