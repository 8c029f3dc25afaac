"""``rebuild``: projections built afresh from the archive in a new schema, verified, switched in by
renaming schemas in one transaction; a writer that kept its connection (and its prepared statements)
writes into the new schema afterwards."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import psycopg
import pytest

from processor.app import open_ledger
from processor.entrypoints.demo import generate, run_program
from processor.settings import PlanSettings, Settings
from projections.model import ArchiveRow, BatchWrite, PositionAdvance
from projections.postgres import PostgresStore
from replay.rebuild import rebuild
from replay.verify import verify


def schemas(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'public%' ORDER BY 1").fetchall()]


def test_rebuild_of_a_demo_ledger_switches_to_equal_books_and_repairs_a_tampered_row(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    with open_ledger(settings) as ledger:
        asyncio.run(run_program(ledger, generate(members=20, months=3, seed=8)))
        before = ledger.store().summary()
    dsn = ledger.dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE member_month SET paid_cents = paid_cents + 5"
                     " WHERE (account_id, coverage_month) IN (SELECT account_id, coverage_month FROM member_month"
                     " ORDER BY 1, 2 LIMIT 1)")
    assert not verify(dsn, settings.plan).ok

    report = rebuild(dsn, settings.plan, stamp="t1")
    assert report.switched and report.mismatches == [] and report.rows_compared > 0
    assert report.retired_schema == "public_retired_t1" and report.built_schema == "public_rebuild_t1"
    assert schemas(dsn) == ["public", "public_retired_t1"]
    assert verify(dsn, settings.plan).ok  # the tampered row is gone: the books come from the archive
    store = PostgresStore(dsn)
    try:
        assert store.summary() == before
        assert store.verify_archive().intact
    finally:
        store.close()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET ROLE ledger_auditor")
        assert conn.execute("SELECT count(*) > 0 FROM member_month").fetchone() == (True,)

    # the ledger goes on in the new schema: more events through the pipeline, books still equal
    with open_ledger(settings) as ledger:
        asyncio.run(run_program(ledger, generate(members=20, months=3, seed=12)))
    assert verify(dsn, settings.plan).ok


def _row(n: int) -> ArchiveRow:
    from tests.integration.test_replay_archive import row

    return row(n, 0, n)


def test_a_writer_with_prepared_statements_follows_the_switch(pg_dsn: str) -> None:
    store = PostgresStore(pg_dsn)
    try:
        store.migrate()
        for n in range(8):  # past psycopg's prepare threshold: the statements are server-side prepared
            store.commit_batch(BatchWrite(archive=[_row(n)], positions=[PositionAdvance(
                "log-chain", "ledger.payments", 0, None if n == 0 else n, n + 1, 1, 0, 0)]))
        plan = PlanSettings()
        assert not verify(pg_dsn, plan).ok  # archive only: the live projections were never written
        report = rebuild(pg_dsn, plan, stamp="t2")
        assert report.switched and report.events_replayed == 8
        assert verify(pg_dsn, plan).ok
        store.commit_batch(BatchWrite(archive=[_row(8)], positions=[PositionAdvance(
            "log-chain", "ledger.payments", 0, 8, 9, 1, 0, 0)]))
        with psycopg.connect(pg_dsn) as conn:
            assert conn.execute("SELECT count(*) FROM archive").fetchone() == (9,)
            # the archive never moves (the ledger may not replace it): the retired schema holds projections
            assert conn.execute("SELECT to_regclass('public_retired_t2.archive') IS NULL,"
                                " to_regclass('public_retired_t2.member_month') IS NOT NULL").fetchone() == (True, True)
            assert conn.execute("SELECT next_offset FROM positions").fetchone() == (9,)
        assert store.verify_archive().intact and store.verify_archive().events_checked == 9

        def meanwhile() -> None:  # the processor commits while the rebuild is between verify and switch
            store.commit_batch(BatchWrite(archive=[_row(9), _row(10)], positions=[PositionAdvance(
                "log-chain", "ledger.payments", 0, 9, 11, 2, 0, 0)]))

        again = rebuild(pg_dsn, plan, stamp="t3", before_switch=meanwhile)
        assert again.switched and again.events_replayed == 9 and again.caught_up == 2
        assert verify(pg_dsn, plan).ok
        with psycopg.connect(pg_dsn) as conn:
            assert conn.execute("SELECT count(*), max(seq) FROM archive").fetchone() == (11, 11)
            assert conn.execute("SELECT next_offset FROM positions").fetchone() == (11,)
        assert store.verify_archive().intact
    finally:
        store.close()


def _archive(events: list, start: int) -> list[ArchiveRow]:  # type: ignore[type-arg]
    """Events archived on partition 0 (a broadcast under its partition's dedupe key), offsets from ``start``."""
    from datetime import UTC, datetime, timedelta

    from events.codec import body_hash, encode
    from events.types import tag_of

    rows = []
    for i, event in enumerate(events, start=start):
        body = encode(event)
        broadcast = type(event).BROADCAST
        rows.append(ArchiveRow(
            log_id="log-catch", topic="ledger.mixed", partition=0, offset=i,
            dedupe_key=f"{event.event_id}@p0" if broadcast else event.event_id, event_id=event.event_id,
            event_type=tag_of(type(event)), account_id=event.account_id, effective_on=event.effective_on,
            occurred_at=event.occurred_at, recorded_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=i),
            body=body, body_hash=body_hash(body)))
    return rows


@pytest.mark.parametrize("rounds", [0, 2])
def test_events_archived_during_the_rebuild_are_caught_up_with_the_accounts_they_reach(
    pg_dsn: str, rounds: int,
) -> None:
    """A business day archived meanwhile reaches every account of its partition (all are folded again);
    a payment reaches its account, and a new account arrives: the switched books equal a replay."""
    from datetime import date

    from tests.unit.builders import bill, day, enroll, pay, rate

    before = [rate(78_412, month_from=date(2026, 1, 1)), enroll(account="A1"), enroll(account="A2"),
              bill(78_412, account="A1", due_on=date(2026, 1, 1)), bill(78_412, account="A2", due_on=date(2026, 1, 1)),
              pay(20_000, account="A2", month=date(2026, 6, 1), payer="A2")]  # not billed: held
    store = PostgresStore(pg_dsn)
    try:
        store.migrate()
        store.commit_batch(BatchWrite(archive=_archive(before, 0), positions=[
            PositionAdvance("log-catch", "ledger.mixed", 0, None, len(before), len(before), 0, 0)]))
        later = [day(date(2026, 3, 1)), pay(78_412, account="A1"), enroll(account="A3"),
                 pay(10_000, account="A3", month=None, payer="A3")]

        def meanwhile() -> None:
            store.commit_batch(BatchWrite(archive=_archive(later, len(before)), positions=[PositionAdvance(
                "log-catch", "ledger.mixed", 0, len(before), len(before) + len(later), len(later), 0, 0)]))

        plan = PlanSettings()
        report = rebuild(pg_dsn, plan, stamp=f"catch{rounds}", before_switch=meanwhile, rounds=rounds,
                         accounts_max=1)
        assert report.switched and report.caught_up == len(later) and report.events_replayed == len(before)
        checked = verify(pg_dsn, plan)
        assert checked.ok, checked.mismatches[:3]
        assert checked.tables["account_snapshot"] == 3
        with psycopg.connect(pg_dsn) as conn:
            kinds = conn.execute("SELECT account_id, kind FROM discrepancy ORDER BY 1, 2").fetchall()
            cash = dict(conn.execute("SELECT payer_id, unapplied_cents FROM payer_unapplied").fetchall())
        assert ("A2", "missing_payment") in kinds  # the day, folded into an account no late event names
        assert ("A1", "missing_payment") in kinds and ("A3", "unmatched_payment") in kinds
        assert cash == {"A2": 20_000, "A3": 10_000}  # A2 folded again: its cash moved once
    finally:
        store.close()
