"""Replay split by partition over worker processes, all reading one exported snapshot.

Partitions fold independently (an account lives on one partition; rates and business days are
broadcast to every partition), so each worker streams only its partitions' rows (in seq order) and
folds them with the same ``Replayer``; the results are disjoint and merge by union (payer cash adds
up). Every worker reads the coordinator's snapshot (``pg_export_snapshot``), so the parts form one
consistent archive prefix, the same one the coordinator then compares the live tables against.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import msgspec
import psycopg

from processor.settings import PlanSettings
from processor.state import AccountState, PartitionState
from projections.model import DiscrepancyRow
from replay.archive import ArchivedEvent
from replay.fold import Replayer, ReplayRejection, ReplayResult

_COLUMNS = "seq, partition, event_id, event_type, account_id, recorded_at, body, body_hash"
_TYPES = ["int8", "int4", "text", "text", "text", "timestamptz", "bytea", "bytea"]
_accounts_codec = msgspec.msgpack.Encoder()
_accounts_decoder = msgspec.msgpack.Decoder(list[AccountState])
_partitions_decoder = msgspec.msgpack.Decoder(list[PartitionState])


def _fold_partitions(dsn: str, snapshot: str, partitions: list[int], plan_json: str, strict: bool
                     ) -> tuple[bytes, bytes, list[DiscrepancyRow], dict[str, int], int, list[ReplayRejection]]:
    """Worker: fold the given partitions as of the exported snapshot; states come back as msgpack."""
    plan = PlanSettings.model_validate_json(plan_json)
    replayer = Replayer(plan, strict=strict)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        conn.autocommit = False
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        conn.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'".encode())
        query = (f"COPY (SELECT {_COLUMNS} FROM archive WHERE partition = ANY(%s::int[]) ORDER BY seq)"
                 " TO STDOUT (FORMAT BINARY)")
        with conn.cursor() as cur, cur.copy(query.encode(), (partitions,)) as copy:
            copy.set_types(_TYPES)
            for seq, partition, event_id, event_type, account, recorded_at, body, digest in copy.rows():
                replayer.apply(ArchivedEvent(seq, partition, event_id, event_type, account, recorded_at,
                                             bytes(body), bytes(digest)))
        conn.rollback()
    res = replayer.result
    return (_accounts_codec.encode(list(res.accounts.values())),
            _accounts_codec.encode(list(res.partitions.values())), list(res.discrepancies.values()),
            res.payer_unapplied, res.events_replayed, res.rejected)


def replay_parallel(conn: psycopg.Connection[tuple[Any, ...]], dsn: str, plan: PlanSettings, *, workers: int = 2,
                    strict: bool = True) -> ReplayResult:
    """Fold the archive visible to ``conn``'s (REPEATABLE READ) transaction with ``workers`` processes."""
    row = conn.execute("SELECT pg_export_snapshot()").fetchone()
    assert row is not None
    snapshot = str(row[0])
    parts = [int(r[0]) for r in conn.execute("SELECT DISTINCT partition FROM archive_chain_head ORDER BY 1")]
    groups = [parts[i::workers] for i in range(workers) if parts[i::workers]]
    result = ReplayResult()
    if not groups:
        return result
    context = multiprocessing.get_context("spawn")  # no inherited connections in the children
    with ProcessPoolExecutor(max_workers=len(groups), mp_context=context) as pool:
        futures = [pool.submit(_fold_partitions, dsn, snapshot, g, plan.model_dump_json(), strict) for g in groups]
        for future in futures:
            accounts, partitions, discrepancies, cash, n, rejected = future.result()
            for account in _accounts_decoder.decode(accounts):
                result.accounts[account.account_id] = account
            for part in _partitions_decoder.decode(partitions):
                result.partitions[part.partition] = part
            for d in discrepancies:
                result.discrepancies[d.discrepancy_id] = d
            for payer, cents in cash.items():
                result.payer_unapplied[payer] = result.payer_unapplied.get(payer, 0) + cents
            result.events_replayed += n
            result.rejected.extend(rejected)
    return result
