"""PostgreSQL store: the LedgerStore contract on psycopg 3, one batch = one transaction.

One long-lived connection (autocommit off). Every method runs in its own short transaction, so no
transaction is left idle between calls; a lock serialises callers from different threads (the
processor and the outbox relay share the store through ``asyncio.to_thread``). The reads for people
and reports are in projections/postgres_reads.py, the SQL of the writes and the processor's lookups in
projections/postgres_sql.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any, TypeVar

import msgspec
import psycopg
from psycopg import errors

from processor.state import AccountState, PartitionState, decode_partition
from processor.stored import assemble_account
from projections.chain import GENESIS, ChainedRow, ChainReport, check_heads, link, verify_chain
from projections.model import (
    ECHO_STREAMS,
    BatchWrite,
    CoverageRow,
    DiscrepancyRow,
    MonthRow,
    OutboxRow,
    PositionConflict,
    next_log_id,
)
from projections.postgres_reads import PostgresReads
from projections.postgres_sql import (
    ADD_PAYER_UNAPPLIED,
    ADVANCE_POSITION,
    ARCHIVE_COLUMNS,
    ARCHIVE_TYPES,
    CHAIN_COLUMNS,
    CHAIN_TYPES,
    CHANGE_DISCREPANCY,
    CLOSE_DISCREPANCY,
    CYCLE_ACCOUNTS,
    DUE_ACCOUNTS,
    ECHOED,
    INSERT_COVERAGE,
    INSERT_DEAD_LETTER,
    INSERT_OUTBOX,
    LOCK_CHAIN_HEADS,
    MOVE_CHAIN_HEADS,
    OPEN_DISCREPANCY,
    POSITION_CONSTRAINTS,
    UPSERT_ACCOUNTS,
    UPSERT_FSA,
    UPSERT_MONTH_STATES,
    UPSERT_MONTHS,
    UPSERT_PARTITION,
)

# Key of the transaction-scoped advisory lock taken while migrating ("ledger-migrate").
MIGRATION_LOCK_KEY = 0x6C65_6467_6D69_67

class MigrationNeedsAdmin(RuntimeError):
    """A migration changes what only an administrator may change (the archive is not the ledger's)."""


def migration_files() -> list[Traversable]:
    """The packaged ``projections/migrations/*.sql`` files, in the order they apply (by file name)."""
    folder = resources.files("projections").joinpath("migrations")
    return sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)


_T = TypeVar("_T")


def _last_by_id(rows: list[_T], key: Callable[[_T], str]) -> list[_T]:
    """The rows, each id's last only (a set-based statement may touch a row once)."""
    return list({key(r): r for r in rows}.values())


def _columns(rows: list[tuple[Any, ...]], width: int) -> tuple[list[Any], ...]:
    """Rows as a tuple of column lists, for ``unnest``."""
    if not rows:
        return tuple([] for _ in range(width))
    columns = tuple(list(c) for c in zip(*rows, strict=True))
    assert len(columns) == width, (len(columns), width)
    return columns


def _causes(d: DiscrepancyRow) -> str:
    return msgspec.json.encode(list(d.cause_event_ids)).decode()


def _work(d: DiscrepancyRow) -> tuple[Any, ...]:
    return (d.assignee, d.work_status, d.notes, d.last_user, d.last_reason, d.last_event_id, d.pending_action,
            d.pending_cents, d.pending_by, d.pending_event_id)


class PostgresStore(PostgresReads):
    """The PostgreSQL implementation of ``projections.model.LedgerStore``."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._lock = threading.RLock()
        self._conn: psycopg.Connection[tuple[Any, ...]] = self._connect()

    @property
    def dsn(self) -> str:
        """The connection string (replay and audit readers open connections of their own)."""
        return self._dsn

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        conn = psycopg.connect(self._dsn, autocommit=False)
        conn.execute("SET TIME ZONE 'UTC'")
        conn.commit()
        return conn

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """One short transaction on the shared connection (reconnecting if the server dropped it)."""
        with self._lock:
            if self._conn.broken:  # lost (not closed by us): start again
                self._conn = self._connect()
            with self._conn.transaction():
                yield self._conn

    def migrate(self) -> None:
        """Apply the packaged migrations not yet recorded in ``schema_migrations``, each in its own tx."""
        for file in migration_files():
            version = file.name.removesuffix(".sql")
            with self._tx() as conn:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
                )
                done = conn.execute("SELECT 1 FROM schema_migrations WHERE version = %s", (version,))
                if done.fetchone() is not None:
                    continue
                try:
                    conn.execute(file.read_text(encoding="utf-8").encode())  # several statements, no params
                except errors.InsufficientPrivilege as exc:
                    raise MigrationNeedsAdmin(
                        f"migration {version} needs more than this role may do ({exc.diag.message_primary}):"
                        " apply it as an administrator with `benefits-ledger setup-roles --admin-dsn DSN`"
                    ) from exc
                conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))

    def applied_migrations(self) -> list[str]:
        """Versions recorded in ``schema_migrations``, oldest first."""
        with self._tx() as conn:
            rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
        return [r[0] for r in rows]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- processor side -----------------------------------------------------------------------

    def positions(self, log_id: str) -> dict[tuple[str, int], int]:
        """Next offset to read per (topic, partition) of one log."""
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT topic, partition, next_offset FROM positions WHERE log_id = %s", (log_id,)
            ).fetchall()
        return {(t, p): n for t, p, n in rows}

    def load_accounts(self, account_ids: list[str]) -> dict[str, AccountState]:
        """Snapshots of the named accounts that exist, in the order asked."""
        if not account_ids:
            return {}
        # Results in binary: the rows' bytea arrive as they are stored, not hex-encoded and parsed back
        # (half the fetch of an account with years of month rows).
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT account_id, state FROM account_snapshot WHERE account_id = ANY(%s)", (account_ids,),
                binary=True,
            ).fetchall()
            month_rows = conn.execute(
                "SELECT account_id, month_key, state, findings FROM account_month_state"
                " WHERE account_id = ANY(%s) ORDER BY account_id, ordinal", (account_ids,), binary=True,
            ).fetchall()
        found = dict(rows)
        months: dict[str, list[tuple[str, bytes, bytes | None]]] = {}
        for account_id, key, raw, findings in month_rows:
            months.setdefault(account_id, []).append((key, raw, findings))
        return {a: assemble_account(found[a], months.get(a, [])) for a in account_ids if a in found}

    def load_partitions(self, partitions: list[int]) -> dict[int, PartitionState]:
        """Snapshots of the named partitions' reference data that exist, in the order asked."""
        if not partitions:
            return {}
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT partition, state FROM partition_state WHERE partition = ANY(%s::int[])", (partitions,)
            ).fetchall()
        found = dict(rows)
        return {p: decode_partition(found[p]) for p in partitions if p in found}

    def due_accounts(self, partition: int, due_before: date) -> list[str]:
        """Accounts with a billed, wholly unpaid month due before the date and no open missing_payment."""
        with self._tx() as conn:
            rows = conn.execute(DUE_ACCOUNTS, (partition, due_before)).fetchall()
        return [r[0] for r in rows]

    def agency_accounts(self, agency_ids: list[str]) -> list[str]:
        """Accounts whose subscriber has (or had) coverage paid by one of the agencies."""
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT DISTINCT account_id FROM member_coverage WHERE relationship = 'self'"
                " AND agency_id = ANY(%s) ORDER BY account_id", (agency_ids,),
            ).fetchall()
        return [r[0] for r in rows]

    def month_accounts(self, partition: int, month_from: date, month_through: date | None) -> list[str]:
        """Accounts with a coverage-month row in the range: those a rate for the range can reach back to."""
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT DISTINCT account_id FROM member_month WHERE partition = %s AND coverage_month >= %s"
                " AND (%s::date IS NULL OR coverage_month <= %s::date) ORDER BY account_id",
                (partition, month_from, month_through, month_through),
            ).fetchall()
        return [r[0] for r in rows]

    def fsa_open_accounts(self, partition: int, plan_year_through: int) -> list[str]:
        """Accounts with an FSA plan year not yet closed, up to the year: those a business day may settle."""
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT DISTINCT f.account_id FROM fsa_account f JOIN account_snapshot s USING (account_id)"
                " WHERE s.partition = %s AND NOT f.closed AND f.plan_year <= %s ORDER BY f.account_id",
                (partition, plan_year_through),
            ).fetchall()
        return [r[0] for r in rows]

    def cycle_accounts(self, partition: int, month: date) -> list[str]:
        """Accounts a closing billing cycle of ``month`` may judge: coverage in force on some day of the
        month and no bill for it, or a row for the month without a bill. Billed accounts are not loaded."""
        last = (month.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
        with self._tx() as conn:
            rows = conn.execute(CYCLE_ACCOUNTS, {"p": partition, "first": month, "last": last}).fetchall()
        return [r[0] for r in rows]

    def find_events(self, dedupe_keys: list[str]) -> dict[str, bytes]:
        """dedupe_key -> body_hash of the keys already archived."""
        if not dedupe_keys:
            return {}
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT dedupe_key, body_hash FROM archive WHERE dedupe_key = ANY(%s)", (dedupe_keys,)
            ).fetchall()
        return {k: bytes(h) for k, h in rows}

    def archived_body(self, dedupe_key: str) -> bytes | None:
        """The archived body under a dedupe key (None if there is none): a resend whose hash differs is
        compared with it decoded, so a body archived before a field with a default was added still matches."""
        with self._tx() as conn:
            row = conn.execute("SELECT body FROM archive WHERE dedupe_key = %s LIMIT 1", (dedupe_key,)).fetchone()
        return None if row is None else bytes(row[0])

    def payer_unapplied_for(self, payer_ids: list[str]) -> dict[str, int]:
        """payer_id -> unapplied cash of the named payers that have a row (zero included)."""
        if not payer_ids:
            return {}
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT payer_id, unapplied_cents FROM payer_unapplied WHERE payer_id = ANY(%s)", (payer_ids,)
            ).fetchall()
        return {p: int(c) for p, c in rows}

    def commit_batch(self, batch: BatchWrite) -> None:
        """Write the whole batch in one transaction, or nothing (PositionConflict if already applied)."""
        try:
            with self._tx() as conn:
                self._advance_positions(conn, batch)
                self._write(conn, batch)
        except errors.UniqueViolation as exc:
            if exc.diag.constraint_name in POSITION_CONSTRAINTS:
                raise PositionConflict(f"batch already applied: {exc.diag.message_detail or exc}") from exc
            raise

    def _advance_positions(self, conn: psycopg.Connection[tuple[Any, ...]], batch: BatchWrite) -> None:
        """Compare-and-set every position first; any mismatch aborts the transaction."""
        if not batch.positions:
            return
        params = [
            {"log_id": a.log_id, "topic": a.topic, "partition": a.partition, "next_offset": a.next_offset,
             "applied": a.applied, "duplicates": a.duplicates, "dead_lettered": a.dead_lettered,
             "expected": a.expected_next}
            for a in batch.positions
        ]  # fmt: skip
        with conn.cursor() as cur:
            cur.executemany(ADVANCE_POSITION, params, returning=True)
            for adv in batch.positions:
                row = cur.fetchone()
                if row is None or (row[0] and adv.expected_next is not None):
                    raise PositionConflict(
                        f"{adv.topic}[{adv.partition}] of {adv.log_id} is not at {adv.expected_next}:"
                        " another writer moved it"
                    )
                cur.nextset()

    def _write(self, conn: psycopg.Connection[tuple[Any, ...]], batch: BatchWrite) -> None:
        with conn.cursor() as cur:
            if batch.archive:
                parts = sorted({r.partition for r in batch.archive})
                locked = cur.execute(LOCK_CHAIN_HEADS, (parts, [GENESIS] * len(parts))).fetchall()
                heads = {int(p): bytes(h) for p, h in locked}
                with cur.copy(f"COPY archive ({ARCHIVE_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(ARCHIVE_TYPES)
                    write = copy.write_row
                    for r in batch.archive:
                        chained = link(
                            heads[r.partition], body_hash=r.body_hash, log_id=r.log_id, topic=r.topic,
                            partition=r.partition, offset=r.offset, dedupe_key=r.dedupe_key,
                            event_id=r.event_id, event_type=r.event_type, account_id=r.account_id,
                            effective_on=r.effective_on, occurred_at=r.occurred_at, recorded_at=r.recorded_at,
                        )
                        heads[r.partition] = chained
                        write((r.log_id, r.topic, r.partition, r.offset, r.dedupe_key, r.event_id,
                               r.event_type, r.account_id, r.effective_on, r.occurred_at, r.recorded_at,
                               r.body, r.body_hash, chained))  # fmt: skip
                moved_heads = (parts, [heads[p] for p in parts])
            with conn.pipeline():
                if batch.archive:
                    cur.execute(MOVE_CHAIN_HEADS, moved_heads)
                self._write_accounts(cur, batch)
                for p, part_bytes in batch.freeze().partitions:
                    cur.execute(UPSERT_PARTITION, (p, part_bytes))
                self._write_discrepancies(cur, batch)
                if batch.outbox:
                    cur.execute(INSERT_OUTBOX, _columns([(o.event_id, o.key, o.body, o.stream) for o in batch.outbox],
                                                         4))
                if batch.echoed:
                    cur.execute(ECHOED, (batch.echoed, sorted(ECHO_STREAMS)))
                deltas = [(p, d) for p, d in batch.payer_unapplied_delta.items() if d]
                if deltas:
                    cur.execute(ADD_PAYER_UNAPPLIED, ([p for p, _ in deltas], [d for _, d in deltas]))
                if batch.dead_letters:
                    cur.executemany(INSERT_DEAD_LETTER, [
                        (d.log_id, d.topic, d.partition, d.offset, d.event_id, d.reason, d.field, d.key,
                         d.raw, d.recorded_at)
                        for d in batch.dead_letters
                    ])  # fmt: skip

    @staticmethod
    def _write_accounts(cur: psycopg.Cursor[tuple[Any, ...]], batch: BatchWrite) -> None:
        frozen = batch.freeze()  # a header the store holds already is not among the snapshots
        months: list[MonthRow] = frozen.months
        rewritten = list(frozen.coverage)
        coverage: list[tuple[int, CoverageRow]] = [
            pair for rows in frozen.coverage.values() for pair in enumerate(rows)
        ]
        if frozen.snapshots:
            cur.execute(UPSERT_ACCOUNTS, tuple(map(list, zip(*frozen.snapshots, strict=True))))
        if frozen.month_states:
            cur.execute(UPSERT_MONTH_STATES, tuple(map(list, zip(*frozen.month_states, strict=True))))
        if months:
            cur.execute(UPSERT_MONTHS, (
                [m.account_id for m in months], [m.coverage_month for m in months],
                [m.partition for m in months], [m.expected_cents for m in months],
                [m.billed_cents for m in months], [m.adjusted_cents for m in months],
                [m.paid_cents for m in months], [m.unapplied_cents for m in months],
                [m.balance_cents for m in months], [m.due_on for m in months],
                [m.refunded_cents for m in months], [m.post_tax_cents for m in months],
                [m.imputed_income_cents for m in months], [m.employee_share_cents for m in months],
                [m.employer_share_cents for m in months],
            ))  # fmt: skip
        if rewritten:
            cur.execute("DELETE FROM member_coverage WHERE account_id = ANY(%s)", (rewritten,))
        if coverage:
            cur.execute(INSERT_COVERAGE, (
                [c.account_id for _, c in coverage], [i for i, _ in coverage],
                [c.member_id for _, c in coverage], [c.relationship for _, c in coverage],
                [c.coverage_line for _, c in coverage], [c.plan for _, c in coverage],
                [c.tier for _, c in coverage], [c.status for _, c in coverage],
                [c.begin_on for _, c in coverage], [c.end_on for _, c in coverage],
                [c.agency_id for _, c in coverage], [c.event_id for _, c in coverage],
            ))  # fmt: skip
        fsa = frozen.fsa
        if fsa:
            cur.execute(UPSERT_FSA, (
                [f.account_id for f in fsa], [f.member_id for f in fsa], [f.plan_year for f in fsa],
                [f.account_type for f in fsa], [f.election_cents for f in fsa], [f.contributed_cents for f in fsa],
                [f.reimbursed_cents for f in fsa], [f.carryover_in_cents for f in fsa],
                [f.carryover_out_cents for f in fsa], [f.available_cents for f in fsa], [f.closed for f in fsa],
            ))  # fmt: skip

    @staticmethod
    def _write_discrepancies(cur: psycopg.Cursor[tuple[Any, ...]], batch: BatchWrite) -> None:
        # one statement per kind: a row changed twice in the batch is written as it ended (the last)
        opened = _last_by_id(batch.discrepancies_opened, lambda d: d.discrepancy_id)
        if opened:
            cur.execute(OPEN_DISCREPANCY, _columns([
                (d.discrepancy_id, d.kind, d.account_id, d.coverage_month, d.payer_id, d.expected_cents,
                 d.actual_cents, _causes(d), d.explanation, d.action, d.actor, d.status, d.opened_by, d.resolved_by,
                 d.opened_recorded_at, d.resolved_recorded_at, *_work(d))
                for d in opened
            ], 26))  # fmt: skip
        changed = _last_by_id(batch.discrepancies_changed, lambda d: d.discrepancy_id)
        if changed:
            cur.execute(CHANGE_DISCREPANCY, _columns([
                (d.expected_cents, d.actual_cents, d.explanation, d.action, _causes(d), *_work(d), d.discrepancy_id)
                for d in changed
            ], 16))  # fmt: skip
        closed = _last_by_id(batch.discrepancies_closed, lambda c: c.discrepancy_id)
        if closed:
            cur.execute(CLOSE_DISCREPANCY, _columns([
                (c.status, c.resolved_by, c.recorded_at, c.discrepancy_id) for c in closed
            ], 4))  # fmt: skip

    # -- relay side ---------------------------------------------------------------------------

    def outbox_pending(
        self, limit: int, *, log_id: str | None = None, republish_before: datetime | None = None,
    ) -> list[tuple[int, OutboxRow]]:
        """Outbox rows to publish, oldest first: those never published and, given the relay's log, rows of
        ECHO_STREAMS that have not come back and were published on another log (or before
        ``republish_before``)."""
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT seq, event_id, key, body, stream FROM outbox WHERE published_at IS NULL"
                " AND echoed_at IS NULL ORDER BY seq LIMIT %s",
                (limit,),
            ).fetchall()
            if log_id is not None and len(rows) < limit:
                rows += conn.execute(
                    "SELECT seq, event_id, key, body, stream FROM outbox"
                    " WHERE stream = ANY(%s) AND echoed_at IS NULL AND published_at IS NOT NULL"
                    " AND (published_log_id IS DISTINCT FROM %s OR published_at < %s)"
                    " ORDER BY seq LIMIT %s",
                    (sorted(ECHO_STREAMS), log_id, republish_before, limit - len(rows)),
                ).fetchall()
                rows.sort(key=lambda r: r[0])
        return [(seq, OutboxRow(event_id=e, key=k, body=bytes(b), stream=st)) for seq, e, k, b, st in rows]

    def mark_published(self, seqs: list[int], *, log_id: str | None = None) -> None:
        """Mark outbox rows as published on ``log_id``. A row already published keeps its first time,
        unless it is of an ECHO_STREAM and has not come back: then it was published again."""
        if not seqs:
            return
        with self._tx() as conn:
            conn.execute(
                "UPDATE outbox SET published_at = now(), published_log_id = %s"
                " WHERE seq = ANY(%s::bigint[])"
                " AND (published_at IS NULL OR (stream = ANY(%s) AND echoed_at IS NULL))",
                (log_id, seqs, sorted(ECHO_STREAMS)),
            )

    def outbox_undelivered(self, limit: int) -> list[tuple[int, OutboxRow]]:
        """Rows of ECHO_STREAMS whose event the ledger has not seen come back yet, oldest first."""
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT seq, event_id, key, body, stream FROM outbox WHERE stream = ANY(%s) AND echoed_at IS NULL"
                " ORDER BY seq LIMIT %s",
                (sorted(ECHO_STREAMS), limit),
            ).fetchall()
        return [(seq, OutboxRow(event_id=e, key=k, body=bytes(b), stream=st)) for seq, e, k, b, st in rows]

    # -- log identity -------------------------------------------------------------------------

    def current_log(self, cluster_id: str) -> str:
        """The log id the ledger uses on this cluster: its current epoch, else the cluster id itself."""
        with self._tx() as conn:
            row = conn.execute(
                "SELECT log_id FROM log_epoch WHERE cluster_id = %s AND retired_at IS NULL", (cluster_id,)
            ).fetchone()
        return cluster_id if row is None else str(row[0])

    def start_new_log(self, cluster_id: str, reason: str) -> tuple[str, str]:
        """Retire the cluster's current log and start the next; (retired log id, new log id)."""
        with self._tx() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY + 1,))
            row = conn.execute(
                "SELECT log_id FROM log_epoch WHERE cluster_id = %s AND retired_at IS NULL", (cluster_id,)
            ).fetchone()
            old = cluster_id if row is None else str(row[0])
            conn.execute(
                "INSERT INTO log_epoch (log_id, cluster_id, retired_at, reason) VALUES (%s, %s, now(), %s)"
                " ON CONFLICT (log_id) DO UPDATE SET retired_at = now(), reason = excluded.reason",
                (old, cluster_id, reason),
            )
            known = [str(r[0]) for r in conn.execute("SELECT log_id FROM log_epoch WHERE cluster_id = %s",
                                                      (cluster_id,))]
            new = next_log_id(cluster_id, known)
            conn.execute("INSERT INTO log_epoch (log_id, cluster_id) VALUES (%s, %s)", (new, cluster_id))
        return old, new

    def log_topics(self, log_id: str) -> dict[str, str]:
        """topic -> topic id recorded when the ledger first read the topic under this log."""
        with self._tx() as conn:
            rows = conn.execute("SELECT topic, topic_id FROM log_topic WHERE log_id = %s", (log_id,)).fetchall()
        return {str(t): str(i) for t, i in rows}

    def record_log_topics(self, log_id: str, topic_ids: dict[str, str]) -> None:
        """Record topic ids not yet recorded for the log (a recorded one is never changed)."""
        if not topic_ids:
            return
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO log_topic (log_id, topic, topic_id) SELECT %s, t, i FROM unnest(%s::text[], %s::text[])"
                " AS u(t, i) ON CONFLICT (log_id, topic) DO NOTHING",
                (log_id, list(topic_ids), list(topic_ids.values())),
            )

    # -- the archive's chain ----------------------------------------------------------------

    def verify_archive(self) -> ChainReport:
        """Recompute the hash chain of every partition over the whole archive (streamed, in seq order)."""
        with self._tx() as conn, conn.cursor() as cur:
            query = f"COPY (SELECT {CHAIN_COLUMNS} FROM archive ORDER BY seq) TO STDOUT (FORMAT BINARY)"
            with cur.copy(query) as copy:
                copy.set_types(CHAIN_TYPES)
                report = verify_chain(
                    ChainedRow(seq, lg, t, p, o, dk, e, et, a, eff, occ, rec, bytes(body), bytes(bh),
                               None if ch is None else bytes(ch))
                    for seq, lg, t, p, o, dk, e, et, a, eff, occ, rec, body, bh, ch in copy.rows()
                )
            heads = {int(p): bytes(h) for p, h in conn.execute("SELECT partition, chain_hash FROM archive_chain_head")}
        return check_heads(report, heads)

    def chain_heads(self, partitions: list[int]) -> list[tuple[int, int, str, bytes, bytes]]:
        """(partition, seq, event_id, chain_hash, head's chain_hash) of each partition's last archived
        event, in one snapshot (projections/anchor.py signs them)."""
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT h.partition, a.seq, a.event_id, a.chain_hash, h.chain_hash FROM archive_chain_head h"
                " CROSS JOIN LATERAL (SELECT seq, event_id, chain_hash FROM archive"
                "   WHERE partition = h.partition ORDER BY seq DESC LIMIT 1) a"
                " WHERE h.partition = ANY(%s::int[]) ORDER BY h.partition",
                (partitions,),
            ).fetchall()
        return [(int(p), int(q), str(e), bytes(c), bytes(h)) for p, q, e, c, h in rows]
