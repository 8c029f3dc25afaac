"""``benefits-ledger rebuild``: the projections built afresh from the archive in a new schema beside the
live one, verified, and moved in, table by table, in one transaction. The archive itself never moves.

0. The live archive is verified first (hash chain and, when given, the signed checkpoints outside the
   database, projections/anchor.py): a rebuild over an archive that fails verification is refused, since
   it would turn tampered events into books that verify.
1. A schema ``<live>_rebuild_<stamp>`` is created and migrated (the migrations name no schema); the ledger
   owns it (it may create schemas, it owns no archive there that counts).
2. In one REPEATABLE READ snapshot of the live schema the archive up to its last seq S is copied into the
   new schema (a scratch copy, for step 3) and folded (replay.stream: a group of accounts at a time, in
   bounded memory) into the new projection tables, each group written by the store's own batch writer
   as it is folded.
3. The new schema is verified on its own: replay of its copy of the archive equals its projection tables.
4. Catching up: the events archived since are copied too, and the accounts they reach folded again from
   the archive and rewritten (every account of a partition that got a broadcast event, else the
   accounts of the events); payer cash moves by what those events moved. Once or twice without a lock,
   so that little is left for the switch.
5. The switch: one transaction locks the positions, the chain heads, the outbox, the dead letters and
   the live projections against writes (every batch moves positions, and every batch that archives
   takes the chain heads, first), catches up the last events, moves each live projection table to
   ``<live>_retired_<stamp>`` and the rebuilt one into the live schema, and drops the rest of the new
   schema (its scratch archive). Moving a table invalidates other sessions' plans of it, so a processor
   that resumes after the lock resolves its tables again and writes into the new ones; processors
   running a changed fold must be restarted all the same (their cached state came from the old fold).

The archive, its chain heads, the positions, the outbox and the dead letters stay where they are: the
ledger's role may append to the archive but not replace it (projections/roles.py), and a rebuild needs
no more than that role.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from events.types import BROADCAST_ACCOUNT
from processor.settings import PlanSettings
from processor.state import PartitionState
from processor.stored import row_keys
from projections.model import BatchWrite
from projections.postgres import PostgresStore
from replay.archive import ArchivedEvent, read_accounts, read_broadcasts
from replay.stream import ACCOUNTS_MAX, BYTES_MAX, GroupResult, PartitionReplay, PartitionResult, stream_archive
from replay.verify import verify_connection

_ARCHIVE_COLS = (
    'seq, log_id, topic, partition, "offset", dedupe_key, event_id, event_type, account_id, effective_on,'
    " occurred_at, recorded_at, body, body_hash, chain_hash"
)
# The fold's output: rebuilt and moved in. A migration that adds a projection table adds it here. The
# bookkeeping (positions, dead letters, outbox, the notifier's and the workbench's tables) stays where it is.
PROJECTIONS = (
    "account_snapshot", "partition_state", "member_month", "member_coverage", "discrepancy", "payer_unapplied",
    "fsa_account", "account_month_state",
)
# Locked against writes for the switch: a batch moves its positions first, and takes the chain heads
# before it archives anything (the ledger may not lock the archive itself, nor needs to).
_LOCKED = ("positions", "archive_chain_head", "dead_letter", "outbox", *PROJECTIONS)


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
    archive_problem: str | None = None  # why the live archive failed verification (nothing was built)

    def as_json(self) -> dict[str, Any]:
        return {"live_schema": self.live_schema, "built_schema": self.built_schema,
                "retired_schema": self.retired_schema, "events_replayed": self.events_replayed,
                "caught_up": self.caught_up, "rows_compared": self.rows_compared,
                "mismatches": self.mismatches, "switched": self.switched,
                "archive_problem": self.archive_problem}


def _schema_dsn(dsn: str, schema: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, options=f"-c search_path={schema}")


def _group_write(group: GroupResult, payer_delta: dict[str, int] | None = None) -> BatchWrite:
    """Every row of a group's accounts (upserts: a group folded again replaces what it wrote)."""
    return BatchWrite(
        accounts=dict(group.accounts),
        dirty_months={a: set(row_keys(s)) for a, s in group.accounts.items()},
        coverage_changed=set(group.accounts),
        fsa_changed={a for a, s in group.accounts.items() if s.fsa is not None},
        discrepancies_opened=list(group.discrepancies.values()),
        payer_unapplied_delta=dict(payer_delta or {}),
    )


class _Writer:
    """Writes each group into the new schema as it is folded; payer cash and partitions at the end."""

    def __init__(self, store: PostgresStore, late: bool = False) -> None:
        self.store = store
        self.late = late  # a catch-up: payer cash moves by what the late events moved
        self.partitions: dict[int, PartitionResult] = {}

    def group(self, group: GroupResult) -> None:
        self.store.commit_batch(_group_write(group, group.late_payer_unapplied if self.late else None))

    def partition(self, part: PartitionResult) -> None:
        self.partitions[part.partition] = part


def rebuild(
    dsn: str, plan: PlanSettings, *, switch: bool = True, progress: Callable[[int], None] | None = None,
    stamp: str | None = None, before_switch: Callable[[], None] | None = None,
    check_archive: Callable[[], str | None] | None = None, accounts_max: int = ACCOUNTS_MAX,
    bytes_max: int = BYTES_MAX, rounds: int = 2,
) -> RebuildReport:
    """Rebuild into a new schema, verify it, and (with ``switch``) move it in. ``before_switch`` runs
    after the verification, before the catching up and the switch (tests use it to write meanwhile).

    ``check_archive`` verifies the live archive and returns what is wrong with it, or None; the default
    recomputes the hash chain only (``verify-archive`` passes one that also checks the signed
    checkpoints). When it finds a problem nothing is built and nothing switched. ``rounds``: catch-ups
    before the switch's lock."""
    stamp = stamp or datetime.now(UTC).strftime("%Y%m%d%H%M%S%f")
    with psycopg.connect(dsn, autocommit=True) as admin:
        row = admin.execute("SELECT current_schema()").fetchone()
        if row is None or row[0] is None:
            raise RebuildError("no current schema: check the search_path")
        live = str(row[0])
    new, retired = f"{live}_rebuild_{stamp}", f"{live}_retired_{stamp}"
    report = RebuildReport(live_schema=live, built_schema=new)
    problem = (check_archive or (lambda: _chain_problem(dsn)))()
    if problem is not None:
        report.archive_problem = problem
        report.mismatches.append({"table": "archive", "key": None, "fields": [], "live": None, "replay": None,
                                  "problem": f"the archive fails verification, nothing rebuilt: {problem}"})
        return report
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(new)))
    store = PostgresStore(_schema_dsn(dsn, new))
    try:
        store.migrate()
        # 2. one snapshot of the live schema: copy the archive (scratch, for step 3) and fold it
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
            # the snapshot shows nothing after last_seq
            totals = stream_archive(conn, plan, _Writer(store), progress=progress, accounts_max=accounts_max,
                                    bytes_max=bytes_max)
            conn.commit()
        store.commit_batch(BatchWrite(partitions=totals.states(), payer_unapplied_delta=dict(totals.payer_unapplied)))
        report.events_replayed = totals.events_replayed
        # 3. verify the new schema on its own
        with psycopg.connect(_schema_dsn(dsn, new), autocommit=False) as vconn:
            vconn.execute("SET TIME ZONE 'UTC'")
            vconn.commit()
            vconn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            checked = verify_connection(vconn, plan, accounts_max=accounts_max, bytes_max=bytes_max)
            vconn.rollback()
        report.rows_compared, report.mismatches = checked.rows_compared, checked.mismatches
        if checked.mismatches or not switch:
            return report
        if before_switch is not None:
            before_switch()
        # 4. catch up without the lock, so that the switch has little left to fold
        for _ in range(rounds):
            with psycopg.connect(_schema_dsn(dsn, live), autocommit=False) as conn:
                conn.execute("SET TIME ZONE 'UTC'")
                conn.commit()
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                caught = _catch_up(conn, store, new, plan, accounts_max=accounts_max, bytes_max=bytes_max)
                conn.commit()
            report.caught_up += caught
            if not caught:
                break
        # 5. the switch
        with psycopg.connect(_schema_dsn(dsn, live), autocommit=False) as conn:
            conn.execute("SET TIME ZONE 'UTC'")
            conn.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(
                sql.SQL(", ").join(sql.Identifier(live, t) for t in _LOCKED)))
            report.caught_up += _catch_up(conn, store, new, plan, accounts_max=accounts_max, bytes_max=bytes_max)
            with conn.cursor() as cur:
                counts = cur.execute(sql.SQL("SELECT (SELECT count(*) FROM {}), (SELECT count(*) FROM {})").format(
                    sql.Identifier(live, "archive"), sql.Identifier(new, "archive"))).fetchone()
                if counts is None or counts[0] != counts[1]:
                    raise RebuildError(f"archive copy is incomplete: live {counts and counts[0]},"
                                       f" rebuilt {counts and counts[1]}")
                owners: dict[str, str] = {str(name): str(owner) for name, owner in cur.execute(
                    "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c"
                    " WHERE c.relnamespace = %s::regnamespace AND c.relname = ANY(%s) AND c.relkind = 'r'",
                    (live, list(PROJECTIONS))).fetchall()}
                cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(retired)))
                for t in PROJECTIONS:  # moving a table invalidates other sessions' plans of it
                    cur.execute(sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(
                        sql.Identifier(live, t), sql.Identifier(retired)))
                    cur.execute(sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(
                        sql.Identifier(new, t), sql.Identifier(live)))
                    owner = owners.get(t)
                    if owner is not None:  # an administrator's rebuild leaves the tables the ledger's
                        cur.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(
                            sql.Identifier(live, t), sql.Identifier(owner)))
                cur.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(new)))
            conn.commit()
        report.retired_schema, report.switched = retired, True
        return report
    finally:
        store.close()


def _catch_up(conn: psycopg.Connection[tuple[Any, ...]], store: PostgresStore, new: str, plan: PlanSettings, *,
              accounts_max: int, bytes_max: int) -> int:
    """Copy the live archive rows the new schema lacks, fold again from the archive what they reach and
    rewrite it in the new schema (its own connection); returns how many rows were caught up."""
    later = _not_copied(conn, new)
    if not later:
        return 0
    late = {e.seq for e in later}
    conn.execute(sql.SQL("INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM archive WHERE seq = ANY(%s)"
                         ).format(sql.Identifier(new, "archive"), sql.SQL(_ARCHIVE_COLS), sql.SQL(_ARCHIVE_COLS)),
                 (sorted(late),))
    broadcast = sorted({e.partition for e in later if e.account_id == BROADCAST_ACCOUNT})
    accounts: dict[int, set[str]] = {}
    for e in later:
        if e.partition not in broadcast:
            accounts.setdefault(e.partition, set()).add(e.account_id)
    writer = _Writer(store, late=True)
    if broadcast:  # every account of these partitions may have changed: fold them all again
        totals = stream_archive(conn, plan, writer, partitions=broadcast, accounts_max=accounts_max,
                                bytes_max=bytes_max, late=late.__contains__)
        store.commit_batch(BatchWrite(partitions=totals.states()))
    for p, ids in sorted(accounts.items()):
        replay = PartitionReplay(plan, p, read_broadcasts(conn, p), late=late.__contains__)
        stored = store.load_partitions([p]).get(p)
        due = {} if stored is None else dict(stored.remittances_due)
        changed = False
        for group in replay.groups(read_accounts(conn, p, account_ids=sorted(ids)), accounts_max=accounts_max,
                                   bytes_max=bytes_max):
            writer.group(group)
            for account_id in group.accounts:
                due.pop(account_id, None)
            due.update(group.remittances_due)
            changed = changed or group.partition_changed
        state = replay.result().state
        if state is not None or stored is not None or changed:
            state = state or PartitionState(partition=p)
            state.remittances_due = due
            store.commit_batch(BatchWrite(partitions={p: state}))
    return len(later)


def _chain_problem(dsn: str) -> str | None:
    """The default archive check: the hash chain and the chain heads, recomputed."""
    checker = PostgresStore(dsn)
    try:
        broken = checker.verify_archive().first_broken
    finally:
        checker.close()
    if broken is None:
        return None
    return f"seq {broken.seq} (partition {broken.partition}, event {broken.event_id}): {broken.reason}"


def _not_copied(conn: psycopg.Connection[tuple[Any, ...]], new: str) -> list[ArchivedEvent]:
    """Live archive rows the snapshot did not show (committed since; with two workers a smaller seq can
    commit after a larger one, so this is an anti-join, not ``seq > S``), in seq order."""
    rows = conn.execute(sql.SQL(
        "SELECT seq, partition, event_id, event_type, account_id, recorded_at, body, body_hash FROM archive a"
        " WHERE NOT EXISTS (SELECT 1 FROM {} n WHERE n.seq = a.seq) ORDER BY seq"
    ).format(sql.Identifier(new, "archive"))).fetchall()
    return [ArchivedEvent(int(r[0]), int(r[1]), r[2], r[3], r[4], r[5], bytes(r[6]), bytes(r[7])) for r in rows]
