"""Every scenario of the book, folded live (the batch processor and the in-memory store) and then
replayed from the archive it wrote, in seq order (replay.fold) and account by account with the
broadcasts merged in (replay.stream): the replayed books equal the live ones, discrepancy statuses
included (a superseded wrong_rate must stay superseded on replay)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from events import codec
from events.topics import TopicSettings
from processor.batch import BatchProcessor
from processor.settings import PlanSettings
from projections.memory import MemoryStore
from projections.model import PAYMENTS_STREAM
from replay.archive import ArchivedEvent
from replay.fold import replay
from replay.stream import replay_streamed
from replay.verify import VerifyReport, _discrepancy_key, compare, replayed_tables
from tests.scenarios.test_scenarios import SCENARIOS, load
from tests.unit.builders import PARTITIONS, Feed

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def live(events: list[Any], plan: PlanSettings) -> MemoryStore:
    """Fold one record per batch, as a processor keeping up with its topics would; the payments the
    ledger posts itself (cash applied) come back right after, as the relay sends them."""
    store = MemoryStore()
    proc = BatchProcessor(store, log_id="live", plan=plan, topics=TopicSettings(), partitions=PARTITIONS,
                          clock=lambda: NOW)
    feed = Feed()
    pending = feed.records(*events)
    while pending:
        result = proc.process([pending.pop(0)])
        store.commit_batch(result.write)
        proc.committed(result)
        derived = [codec.decode_input(r.body) for r in result.write.outbox if r.stream == PAYMENTS_STREAM]
        pending[:0] = feed.records(*derived)
    return store


def live_tables(store: MemoryStore) -> dict[str, dict[Any, Any]]:
    months: dict[Any, Any] = {}
    for account in sorted({row.account_id for row in store.archive}):
        balance = store.balance(account)
        if balance is not None:
            months.update({(m.account_id, m.coverage_month): m for m in balance.months})
    return {
        "member_month": months,
        "discrepancy": {d.discrepancy_id: d for d in store.discrepancies(limit=1_000_000)},
        "payer_unapplied": dict(store.payer_unapplied()),
    }


FOLDS = {
    "in_seq_order": replay,
    "account_by_account": lambda rows, plan: replay_streamed(rows, plan, accounts_max=1),
}


@pytest.mark.parametrize("fold", FOLDS)
@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_replay_of_the_scenario_equals_the_live_books_statuses_included(path: Path, fold: str) -> None:
    spec, events = load(path)
    plan = PlanSettings(**spec.get("plan", {}))
    store = live(events, plan)
    archived = [
        ArchivedEvent(seq=i, partition=row.partition, event_id=row.event_id, event_type=row.event_type,
                      account_id=row.account_id, recorded_at=row.recorded_at, body=row.body)
        for i, row in enumerate(store.archive, start=1)
    ]
    mine = replayed_tables(FOLDS[fold](archived, plan))
    theirs = live_tables(store)
    report = VerifyReport()
    compare(report, "member_month", theirs["member_month"], mine["member_month"])
    compare(report, "payer_unapplied", theirs["payer_unapplied"], mine["payer_unapplied"])
    compare(report, "discrepancy", theirs["discrepancy"], mine["discrepancy"],
            equal=lambda a, b: _discrepancy_key(a) == _discrepancy_key(b))
    assert report.mismatches == [], report.mismatches[:3]
    assert report.tables["discrepancy"] == len(theirs["discrepancy"])


def test_the_book_has_a_superseding_scenario_so_the_status_is_really_compared() -> None:
    statuses = set()
    for path in SCENARIOS:
        spec, events = load(path)
        statuses.update(d.status for d in live(events, PlanSettings(**spec.get("plan", {}))).discrepancies(
            limit=1_000_000))
    assert {"open", "resolved", "superseded"} <= statuses
