"""The honest ceiling of bench/throughput.py: the real BatchProcessor with a no-op fold still does every
mandatory step (decode and validate, dedupe by event id, archive, positions) and nothing of the fold."""

from __future__ import annotations

from typing import Any

from processor.batch import BatchProcessor
from processor.settings import PlanSettings
from projections.memory import MemoryStore
from tests.unit.builders import ACCOUNT, LOG, NOW, PARTITIONS, TOPICS, UMP_EMP, Feed, bill, enroll, pay, run


def no_fold(*_: Any) -> list[Any]:
    return []


def ceiling_processor() -> tuple[BatchProcessor, MemoryStore]:
    store = MemoryStore()
    return BatchProcessor(store, log_id=LOG, plan=PlanSettings(), topics=TOPICS, partitions=PARTITIONS,
                          clock=lambda: NOW, fold=no_fold), store


def test_a_no_op_fold_archives_dedupes_and_moves_positions_but_projects_nothing() -> None:
    proc, store = ceiling_processor()
    feed = Feed()
    p = pay(UMP_EMP, event_id="pay-1", payment_id="P1")
    run(proc, store, feed.records(enroll(), bill(UMP_EMP), p))
    later = run(proc, store, [feed.record(p), feed.record(pay(UMP_EMP - 1, event_id="pay-1", payment_id="P1"))])
    assert (later.received, later.applied, later.duplicates) == (2, 0, 1)
    [dead] = later.write.dead_letters
    assert "conflicting duplicate" in dead.reason
    assert store.archive_count() == 3 and store.verify_archive().intact
    counts = store.counts()
    assert (counts.received, counts.applied, counts.duplicates, counts.dead_lettered) == (5, 3, 1, 1)
    assert sum(proc.positions().values()) == 5  # every consumed offset moved a position
    assert store.balance(ACCOUNT) is None  # no projection, no discrepancy, no outbox
    assert store.discrepancies() == [] and store.outbox_pending(10) == []


def test_a_malformed_record_is_dead_lettered_by_the_ceiling_as_by_the_ledger() -> None:
    proc, store = ceiling_processor()
    result = run(proc, store, [Feed().raw(TOPICS.payments, 0, b"k", b"{not json")])
    [dead] = result.write.dead_letters
    assert dead.reason.startswith("undecodable") and store.archive_count() == 0
