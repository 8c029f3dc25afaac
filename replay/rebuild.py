"""``benefits-ledger rebuild``: the projections built afresh from the archive in a new schema beside the
live one, verified, and switched in by renaming the two schemas in one transaction.

1. A schema ``<live>_rebuild_<stamp>`` is created and migrated (the migrations name no schema).
2. In one REPEATABLE READ snapshot of the live schema: the archive up to its last seq S, the positions,
   dead letters, outbox and chain heads are copied, and the archive is folded (replay.fold) into the
   new projection tables, written by the store's own batch writer.
3. The new schema is verified on its own: replay of its archive equals its projection tables.
4. The switch: one transaction locks the live tables against writes (reads go on), folds and copies
   the events archived after S, copies the bookkeeping tables again, renames ``<live>`` to
   ``<live>_retired_<stamp>`` and the new schema to ``<live>``, and touches every retired table so
   other sessions' prepared statements are re-planned against the new tables. A processor blocked on
   the lock resolves its tables again when it resumes; processors running a changed fold must be
   restarted all the same (their cached state came from the old fold).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from processor.settings import PlanSettings
from projections.model import BatchWrite
from projections.postgres import PostgresStore
from replay.archive import ArchivedEvent, read_archive
from replay.fold import Replayer
from replay.verify import verify_connection

_ARCHIVE_COLS = (
    'seq, log_id, topic, partition, "offset", dedupe_key, event_id, event_type, account_id, effective_on,'
    " occurred_at, recorded_at, body, body_hash, chain_hash"
)
# Bookkeeping copied as it is (not derived from the archive): (table, columns, has identity seq).
_COPIED = (
    ("positions", "log_id, topic, partition, next_offset, applied, duplicates, dead_lettered, updated_at", False),
    ("dead_letter", 'seq, log_id, topic, partition, "offset", event_id, reason, field, key, raw, recorded_at', True),
    ("outbox", "seq, event_id, key, body, stream, published_at, published_log_id, echoed_at", True),
    ("archive_chain_head", "partition, chain_hash", False),
)
# Every live table, locked against writes for the switch.
_TABLES = (
    "positions", "archive", "archive_chain_head", "dead_letter", "outbox", "account_snapshot",
    "partition_state", "member_month", "member_coverage", "discrepancy", "payer_unapplied", "fsa_account",
)


class RebuildError(RuntimeError):
    pass


@dataclass(slots=True)
class RebuildReport:
    live_schema: str
    built_schema: str
    retired_schema: str | None = None
    events_replayed: int = 0
    caught_up: int = 0
    rows_compared: int = 0
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    switched: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"live_schema": self.live_schema, "built_schema": self.built_schema,
                "retired_schema": self.retired_schema, "events_replayed": self.events_replayed,
                "caught_up": self.caught_up, "rows_compared": self.rows_compared,
                "mismatches": self.mismatches, "switched": self.switched}


def _schema_dsn(dsn: str, schema: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, options=f"-c search_path={schema}")


def _write_state(store: PostgresStore, replayer: Replayer, written_cash: dict[str, int]) -> None:
    """Upsert every replayed account, partition and discrepancy into the store's schema (idempotent);
    payer cash moves by the difference to what was written before."""
    res = replayer.result
    batch = BatchWrite(
        accounts=dict(res.accounts),
        dirty_months={a: set(s.months) for a, s in res.accounts.items()},
        coverage_changed=set(res.accounts),
        fsa_changed={a for a, s in res.accounts.items() if s.fsa is not None},
        partitions=dict(res.partitions),
        discrepancies_opened=list(res.discrepancies.values()),
        payer_unapplied_delta={p: c - written_cash.get(p, 0) for p, c in res.payer_unapplied.items()},
    )
    store.commit_batch(batch)
    written_cash.clear()
    written_cash.update(res.payer_unapplied)


def _copy_bookkeeping(cur: psycopg.Cursor[tuple[Any, ...]], live: str, new: str) -> None:
    for table, cols, identity in _COPIED:
        target = sql.Identifier(new, table)
        cur.execute(sql.SQL("DELETE FROM {}").format(target))
        cur.execute(sql.SQL("INSERT INTO {} ({}) {} SELECT {} FROM {}").format(
            target, sql.SQL(cols), sql.SQL("OVERRIDING SYSTEM VALUE" if identity else ""), sql.SQL(cols),
            sql.Identifier(live, table)))
    for table in ("archive", "dead_letter", "outbox"):
        cur.execute(sql.SQL(
            "SELECT setval(pg_get_serial_sequence({}, 'seq'), coalesce((SELECT max(seq) FROM {}), 0) + 1, false)"
        ).format(sql.Literal(f"{new}.{table}"), sql.Identifier(new, table)))


def rebuild(
    dsn: str, plan: PlanSettings, *, switch: bool = True, progress: Callable[[int], None] | None = None,
    stamp: str | None = None, before_switch: Callable[[], None] | None = None,
) -> RebuildReport:
    """Rebuild into a new schema, verify it, and (with ``switch``) swap it in. ``before_switch`` runs
    after the verification, before the switch transaction (tests use it to write meanwhile)."""
    stamp = stamp or datetime.now(UTC).strftime("%Y%m%d%H%M%S%f")
    with psycopg.connect(dsn, autocommit=True) as admin:
        row = admin.execute("SELECT current_schema()").fetchone()
        if row is None or row[0] is None:
            raise RebuildError("no current schema: check the search_path")
        live = str(row[0])
        new = f"{live}_rebuild_{stamp}"
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(new)))
    report = RebuildReport(live_schema=live, built_schema=new)
    store = PostgresStore(_schema_dsn(dsn, new))
    try:
        store.migrate()
        replayer = Replayer(plan)
        written_cash: dict[str, int] = {}
        # 2. one snapshot of the live schema: copy the archive and bookkeeping, fold the archive
        with psycopg.connect(_schema_dsn(dsn, live), autocommit=False) as conn:
            conn.execute("SET TIME ZONE 'UTC'")
            conn.commit()
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            with conn.cursor() as cur:
                last = cur.execute("SELECT coalesce(max(seq), 0) FROM archive").fetchone()
                last_seq = int(last[0]) if last else 0
                cur.execute(sql.SQL("INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM archive"
                                    " WHERE seq <= %s").format(sql.Identifier(new, "archive"),
                                                               sql.SQL(_ARCHIVE_COLS), sql.SQL(_ARCHIVE_COLS)),
                            (last_seq,))
                _copy_bookkeeping(cur, live, new)
            n = 0
            with contextlib.closing(read_archive(conn)) as events:  # the snapshot shows nothing after last_seq
                for event in events:
                    replayer.apply(event)
                    n += 1
                    if progress is not None and n % 10_000 == 0:
                        progress(n)
            conn.commit()
        _write_state(store, replayer, written_cash)
        report.events_replayed = replayer.result.events_replayed
        # 3. verify the new schema on its own
        with psycopg.connect(_schema_dsn(dsn, new), autocommit=False) as vconn:
            vconn.execute("SET TIME ZONE 'UTC'")
            vconn.commit()
            vconn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            checked = verify_connection(vconn, plan)
            vconn.rollback()
        report.rows_compared, report.mismatches = checked.rows_compared, checked.mismatches
        if checked.mismatches or not switch:
            return report
        if before_switch is not None:
            before_switch()
        # 4. the switch
        with psycopg.connect(_schema_dsn(dsn, live), autocommit=False) as conn:
            conn.execute("SET TIME ZONE 'UTC'")
            conn.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(
                sql.SQL(", ").join(sql.Identifier(live, t) for t in _TABLES)))
            later = _not_copied(conn, new)
            for event in later:
                replayer.apply(event)
            report.caught_up = len(later)
            with conn.cursor() as cur:
                if later:
                    cur.execute(sql.SQL("INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM archive"
                                        " WHERE seq = ANY(%s)").format(sql.Identifier(new, "archive"),
                                                                        sql.SQL(_ARCHIVE_COLS), sql.SQL(_ARCHIVE_COLS)),
                                ([e.seq for e in later],))
                    _write_state(store, replayer, written_cash)  # its own connection: the new schema only
                _copy_bookkeeping(cur, live, new)
                counts = cur.execute(sql.SQL("SELECT (SELECT count(*) FROM {}), (SELECT count(*) FROM {})").format(
                    sql.Identifier(live, "archive"), sql.Identifier(new, "archive"))).fetchone()
                if counts is None or counts[0] != counts[1]:
                    raise RebuildError(f"archive copy is incomplete: live {counts and counts[0]},"
                                       f" rebuilt {counts and counts[1]}")
                retired = f"{live}_retired_{stamp}"
                rename = sql.SQL("ALTER SCHEMA {} RENAME TO {}")
                cur.execute(rename.format(sql.Identifier(live), sql.Identifier(retired)))
                cur.execute(rename.format(sql.Identifier(new), sql.Identifier(live)))
                for t in _TABLES:  # invalidate other sessions' plans of the retired tables
                    cur.execute(sql.SQL("ALTER TABLE {} SET (fillfactor = 100)").format(sql.Identifier(retired, t)))
            conn.commit()
        report.retired_schema, report.built_schema, report.switched = retired, new, True
        return report
    finally:
        store.close()


def _not_copied(conn: psycopg.Connection[tuple[Any, ...]], new: str) -> list[ArchivedEvent]:
    """Live archive rows the snapshot did not show (committed since; with two workers a smaller seq can
    commit after a larger one, so this is an anti-join, not ``seq > S``), in seq order."""
    rows = conn.execute(sql.SQL(
        "SELECT seq, partition, event_id, event_type, account_id, recorded_at, body, body_hash FROM archive a"
        " WHERE NOT EXISTS (SELECT 1 FROM {} n WHERE n.seq = a.seq) ORDER BY seq"
    ).format(sql.Identifier(new, "archive"))).fetchall()
    return [ArchivedEvent(int(r[0]), int(r[1]), r[2], r[3], r[4], r[5], bytes(r[6]), bytes(r[7])) for r in rows]
