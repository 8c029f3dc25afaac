"""Replay equals live: randomized demo workloads through the real pipeline, then the whole archive folded
again and every projection row compared; a tampered projection row is reported."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import psycopg
import pytest

from processor.app import open_ledger
from processor.entrypoints.demo import generate, run_program
from processor.settings import PlanSettings, Settings
from replay.verify import verify


@pytest.mark.parametrize("seed", [random.Random().randrange(10_000), 11])
def test_replay_of_a_randomized_workload_equals_live(settings_factory: Callable[..., Settings], seed: int,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_factory(batch_events_max=random.Random(seed).choice([7, 50, 5000]))
    program = generate(members=25, months=4, seed=seed)
    with open_ledger(settings) as ledger:
        asyncio.run(run_program(ledger, program))
        applied = ledger.store().counts().applied
    report = verify(ledger.dsn, settings.plan)
    assert report.mismatches == [], f"seed {seed}: {report.mismatches[:3]}"
    assert report.events_replayed == applied
    assert report.tables["member_month"] > 0 and report.tables["discrepancy"] > 0
    assert report.rows_compared == sum(report.tables.values())
    if seed == 11:  # the partitions folded in two processes on one exported snapshot: the same rows
        small = verify(ledger.dsn, settings.plan, workers=2)  # too small to pay for a process: in this one
        assert small.mismatches == [] and small.tables == report.tables
        monkeypatch.setattr("replay.parallel.EVENTS_PER_PROCESS_MIN", 0)
        parallel = verify(ledger.dsn, settings.plan, workers=2)
        assert parallel.mismatches == [] and parallel.events_replayed == applied
        assert parallel.tables == report.tables
        # three processes: the four partitions are cut into account ranges, and one account at a time
        sliced = verify(ledger.dsn, settings.plan, workers=3, accounts_max=1)
        assert sliced.mismatches == [] and sliced.events_replayed == applied and sliced.tables == report.tables


def test_a_tampered_projection_row_is_a_mismatch(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory()
    with open_ledger(settings) as ledger:
        asyncio.run(run_program(ledger, generate(members=20, months=3, seed=5)))
    assert verify(ledger.dsn, settings.plan).ok
    with psycopg.connect(ledger.dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT account_id, coverage_month FROM member_month ORDER BY account_id, coverage_month LIMIT 1"
        ).fetchone()
        assert row is not None
        conn.execute("UPDATE member_month SET paid_cents = paid_cents + 1 WHERE account_id = %s"
                     " AND coverage_month = %s", row)
        conn.execute("UPDATE payer_unapplied SET unapplied_cents = unapplied_cents + 7")
        # a row of an account the archive has never seen
        conn.execute("INSERT INTO member_month SELECT 'GHOST', coverage_month, partition, expected_cents,"
                     " billed_cents, adjusted_cents, paid_cents, unapplied_cents, balance_cents, due_on"
                     " FROM member_month LIMIT 1")
    report = verify(ledger.dsn, settings.plan)
    assert not report.ok
    month = [m for m in report.mismatches if m["table"] == "member_month" and m["key"][0] != "GHOST"]
    assert len(month) == 1
    assert month[0]["key"] == [row[0], row[1]] and month[0]["fields"] == ["paid_cents"]
    assert month[0]["live"]["paid_cents"] == month[0]["replay"]["paid_cents"] + 1
    assert any(m["table"] == "payer_unapplied" for m in report.mismatches)
    assert [m["problem"] for m in report.mismatches if m["key"] and m["key"][0] == "GHOST"] == ["missing in replay"]


def test_an_archive_the_fold_rejects_is_reported_not_hung(pg_dsn: str) -> None:
    """A fold error in the middle of the COPY stream ends the stream; verify reports it and returns."""
    from projections.model import BatchWrite, PositionAdvance
    from projections.postgres import PostgresStore
    from tests.unit.builders import bill

    store = PostgresStore(pg_dsn)
    try:
        store.migrate()
        rows = []
        for i in range(3000):  # more than one COPY buffer, so the stream is still open at the error
            twice = i in (10, 11)  # the same bill under two event ids on one account: the fold rejects it
            e = bill(1_000, event_id=f"b-{i}", bill_id="B-SAME" if twice else f"B-{i}",
                     account="A-SAME" if twice else f"A{i}")
            rows.append(_archive_row(e, i))
        store.commit_batch(BatchWrite(archive=rows, positions=[PositionAdvance("log", "t", 0, None, 3000, 3000, 0, 0)]))
    finally:
        store.close()
    report = verify(pg_dsn, PlanSettings())
    assert not report.ok and report.mismatches[0]["table"] == "archive"
    assert "rejected on replay" in report.mismatches[0]["problem"]


def _archive_row(event, offset):  # type: ignore[no-untyped-def]
    from events.codec import body_hash, encode
    from projections.model import ArchiveRow

    body = encode(event)
    return ArchiveRow(log_id="log", topic="t", partition=0, offset=offset, dedupe_key=event.event_id,
                      event_id=event.event_id, event_type="premium_billed", account_id=event.account_id,
                      effective_on=event.effective_on, occurred_at=event.occurred_at,
                      recorded_at=event.occurred_at, body=body, body_hash=body_hash(body))


def test_a_stale_or_missing_month_row_of_the_fold_state_is_a_mismatch(
    settings_factory: Callable[..., Settings],
) -> None:
    """The fold state is stored as a header and month rows: verify assembles them and compares the whole."""
    settings = settings_factory()
    with open_ledger(settings) as ledger:
        asyncio.run(run_program(ledger, generate(members=20, months=3, seed=5)))
    assert verify(ledger.dsn, settings.plan).ok
    with psycopg.connect(ledger.dsn, autocommit=True) as conn:
        stale, missing = (r[0] for r in conn.execute(
            "SELECT account_id FROM account_month_state GROUP BY account_id HAVING count(*) >= 2"
            " ORDER BY account_id LIMIT 2").fetchall())
        # one month's row holds what another month of the account holds: a row left behind by a write
        conn.execute("UPDATE account_month_state SET state = (SELECT state FROM account_month_state"
                     " WHERE account_id = %s ORDER BY ordinal DESC LIMIT 1)"
                     " WHERE account_id = %s AND ordinal = 0", (stale, stale))
        conn.execute("DELETE FROM account_month_state WHERE account_id = %s AND ordinal = 0", (missing,))
    report = verify(ledger.dsn, settings.plan)
    assert not report.ok
    found = {m["key"] for m in report.mismatches if m["table"] == "account_snapshot"}
    assert found == {stale, missing}, report.mismatches
