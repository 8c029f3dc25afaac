"""Tamper evidence on the real PostgreSQL: the hash chain per partition, rows altered by a superuser,
the append-only archive, the auditor role, and migration 0002's SQL backfill agreeing with Python."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta
from importlib import resources

import psycopg
import pytest
from psycopg import errors

from events.codec import body_hash, encode
from events.types import PremiumBilled
from projections.chain import GENESIS, link
from projections.memory import MemoryStore
from projections.model import ArchiveRow, BatchWrite, PositionAdvance
from projections.postgres import PostgresStore

LOG = "log-chain"
T0 = datetime(2026, 1, 5, 9, 0, 0, 123456, tzinfo=UTC)


def row(n: int, partition: int, offset: int, topic: str = "ledger.billing") -> ArchiveRow:
    month = date(2026, 1 + n % 12, 1)
    event = PremiumBilled(
        event_id=f"bill-{n}", account_id=f"A{n % 5}", effective_on=month, occurred_at=T0,
        bill_id=f"B{n}", coverage_month=month, plan="PPO", tier="EE", amount_cents=40_000 + n,
        due_on=month, agency_id="AG1",
    )
    body = encode(event)
    return ArchiveRow(
        log_id=LOG, topic=topic, partition=partition, offset=offset, dedupe_key=event.event_id,
        event_id=event.event_id, event_type="premium_billed", account_id=event.account_id,
        effective_on=month, occurred_at=T0, recorded_at=T0 + timedelta(seconds=n), body=body,
        body_hash=body_hash(body),
    )


def batches(count: int = 4, per: int = 5) -> list[BatchWrite]:
    """Batches over partitions 0..2 and two topics, each advancing its positions."""
    out = []
    offsets: dict[tuple[str, int], int] = {}
    n = 0
    for _ in range(count):
        rows = []
        for _ in range(per):
            topic = "ledger.billing" if n % 2 else "ledger.payments"
            partition = n % 3
            offset = offsets.get((topic, partition), 0)
            rows.append(row(n, partition, offset, topic))
            offsets[(topic, partition)] = offset + 1
            n += 1
        positions = []
        for (topic, partition), nxt in offsets.items():
            last = max((r.offset for r in rows if (r.topic, r.partition) == (topic, partition)), default=None)
            if last is None:
                continue
            before = min(r.offset for r in rows if (r.topic, r.partition) == (topic, partition))
            positions.append(PositionAdvance(LOG, topic, partition, None if before == 0 else before, nxt,
                                             applied=nxt - before, duplicates=0, dead_lettered=0))
        out.append(BatchWrite(archive=rows, positions=positions))
    return out


@pytest.fixture
def pg(pg_dsn: str) -> PostgresStore:
    store = PostgresStore(pg_dsn)
    store.migrate()
    yield store  # type: ignore[misc]
    store.close()


def chained(pg_dsn: str) -> list[tuple[int, int, bytes]]:
    with psycopg.connect(pg_dsn) as conn:
        return [(s, p, bytes(h)) for s, p, h in
                conn.execute("SELECT seq, partition, chain_hash FROM archive ORDER BY seq").fetchall()]


def test_intact_archive_verifies_and_both_stores_chain_alike(pg: PostgresStore, pg_dsn: str) -> None:
    mem = MemoryStore()
    for batch in batches():
        pg.commit_batch(batch)
        mem.commit_batch(batch)
    report = pg.verify_archive()
    assert report.intact and report.events_checked == 20 and report.partitions == 3
    assert mem.verify_archive().intact
    assert [h for _, _, h in chained(pg_dsn)] == mem.chain
    # the first link of each partition chains to genesis; heads hold each partition's last link
    first = next(r for r in mem.archive if r.partition == 1)
    assert mem.chain[mem.archive.index(first)] == link(
        GENESIS, body_hash=first.body_hash, log_id=first.log_id, topic=first.topic, partition=1,
        offset=first.offset, dedupe_key=first.dedupe_key, event_id=first.event_id, event_type=first.event_type,
        account_id=first.account_id, effective_on=first.effective_on, occurred_at=first.occurred_at,
        recorded_at=first.recorded_at)
    with psycopg.connect(pg_dsn) as conn:
        heads = dict(conn.execute("SELECT partition, chain_hash FROM archive_chain_head").fetchall())
    last = {p: h for _, p, h in chained(pg_dsn)}
    assert {p: bytes(h) for p, h in heads.items()} == last


def test_two_writers_of_one_partition_never_fork_its_chain(pg_dsn: str) -> None:
    """Two stores (two workers) writing the same partition on different topics, concurrently."""
    stores = [PostgresStore(pg_dsn) for _ in range(2)]
    stores[0].migrate()
    try:
        def write(i: int) -> None:
            topic = ("ledger.billing", "ledger.payments")[i]
            for k in range(15):
                r = row(100 * i + k, 0, k, topic)
                stores[i].commit_batch(BatchWrite(archive=[r], positions=[PositionAdvance(
                    LOG, topic, 0, None if k == 0 else k, k + 1, applied=1, duplicates=0, dead_lettered=0)]))

        threads = [threading.Thread(target=write, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        report = stores[1].verify_archive()
        assert report.intact and report.events_checked == 30
    finally:
        for s in stores:
            s.close()


@pytest.mark.parametrize("tamper", ["body", "body_and_hash", "recorded_at", "delete", "delete_tail"])
def test_a_row_altered_by_a_superuser_is_the_first_broken_link(pg: PostgresStore, pg_dsn: str, tamper: str) -> None:
    for batch in batches():
        pg.commit_batch(batch)
    victim = chained(pg_dsn)[7]
    changes = {
        "body": "UPDATE archive SET body = convert_to(replace(convert_from(body, 'UTF8'), '\"amount_cents\":',"
                " '\"amount_cents\":1'), 'UTF8') WHERE seq = %s",
        "body_and_hash": "UPDATE archive SET body = convert_to('{}', 'UTF8'),"
                         " body_hash = sha256(convert_to('{}', 'UTF8')) WHERE seq = %s",
        "recorded_at": "UPDATE archive SET recorded_at = recorded_at - interval '1 day' WHERE seq = %s",
        "delete": "DELETE FROM archive WHERE seq = %s",
        "delete_tail": "DELETE FROM archive WHERE partition = (SELECT partition FROM archive WHERE seq = %s)"
                       " AND seq = (SELECT max(seq) FROM archive WHERE partition ="
                       " (SELECT partition FROM archive WHERE seq = 8))",
    }
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE archive DISABLE TRIGGER archive_no_update_delete")
        conn.execute(changes[tamper].encode(), (victim[0],))
        conn.execute("ALTER TABLE archive ENABLE TRIGGER archive_no_update_delete")
    report = pg.verify_archive()
    assert report.first_broken is not None
    if tamper == "delete":  # the next link of the victim's partition no longer follows
        following = next(s for s, p, _ in chained(pg_dsn) if p == victim[1] and s > victim[0])
        assert report.first_broken.seq == following
    elif tamper == "delete_tail":  # every link agrees; the recorded head names the missing tail
        remaining_last = max(s for s, p, _ in chained(pg_dsn) if p == victim[1])
        assert report.first_broken.seq == remaining_last and "head" in report.first_broken.reason
    else:
        assert report.first_broken.seq == victim[0]
    assert report.first_broken.partition == victim[1]
    if tamper == "body":
        assert "body does not match" in report.first_broken.reason
    assert report.events_checked == 20 - tamper.startswith("delete")


def test_the_archive_refuses_update_delete_and_truncate(pg: PostgresStore, pg_dsn: str) -> None:
    pg.commit_batch(batches(1)[0])
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for statement in ("UPDATE archive SET body = body", "DELETE FROM archive", "TRUNCATE archive",
                          "UPDATE archive SET chain_hash = NULL"):
            with pytest.raises(errors.InsufficientPrivilege, match="append-only"):
                conn.execute(statement.encode())
    assert pg.archive_count() == 5 and pg.verify_archive().intact


def test_the_auditor_role_reads_everything_and_changes_nothing(pg: PostgresStore, pg_dsn: str) -> None:
    pg.commit_batch(batches(1)[0])
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'v') ORDER BY 1").fetchall()]
        assert {"archive", "archive_json", "member_month", "discrepancy", "positions"} <= set(tables)
        conn.execute("SET ROLE ledger_auditor")
        for table in tables:
            conn.execute(f'SELECT count(*) FROM "{table}"'.encode()).fetchone()
        assert conn.execute("SELECT count(*) FROM archive").fetchone() == (5,)
        for statement in (
            "INSERT INTO payer_unapplied VALUES ('X', 1)",
            "UPDATE member_month SET paid_cents = 0",
            "DELETE FROM discrepancy",
            "UPDATE archive SET body = body",
            "TRUNCATE positions",
            "CREATE TABLE auditor_scratch (x int)",
            "ALTER TABLE archive DISABLE TRIGGER archive_no_update_delete",
        ):
            with pytest.raises((errors.InsufficientPrivilege, errors.InvalidSchemaName)):
                conn.execute(statement.encode())
        conn.execute("RESET ROLE")


def test_migration_backfills_the_chain_of_rows_archived_before_it(pg_dsn: str) -> None:
    """An archive written under 0001 only gets its links from 0002's SQL, equal to the Python chain."""
    initial = resources.files("projections").joinpath("migrations", "0001_initial.sql").read_text()
    rows = [r for b in batches(3) for r in b.archive]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(initial.encode())
        conn.execute("CREATE TABLE schema_migrations (version text PRIMARY KEY,"
                     " applied_at timestamptz NOT NULL DEFAULT now())")
        conn.execute("INSERT INTO schema_migrations (version) VALUES ('0001_initial')")
        with conn.cursor() as cur:
            cur.executemany(
                'INSERT INTO archive (log_id, topic, partition, "offset", dedupe_key, event_id, event_type,'
                " account_id, effective_on, occurred_at, recorded_at, body, body_hash)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [(r.log_id, r.topic, r.partition, r.offset, r.dedupe_key, r.event_id, r.event_type,
                  r.account_id, r.effective_on, r.occurred_at, r.recorded_at, r.body, r.body_hash) for r in rows])
    store = PostgresStore(pg_dsn)
    try:
        store.migrate()
        assert store.verify_archive().intact
        mem = MemoryStore()
        mem.commit_batch(BatchWrite(archive=rows))
        assert [h for _, _, h in chained(pg_dsn)] == mem.chain
        # and the chain goes on from the backfilled heads
        more = batches(4)[3]
        store.commit_batch(BatchWrite(archive=more.archive))
        assert store.verify_archive().intact
    finally:
        store.close()
