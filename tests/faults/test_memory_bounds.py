"""Memory bounds of the processor (issue 12, defect 9).

Before: the key -> partition memo was never trimmed, and the account cache was bounded only by count
(200,000 accounts of about 30 KB: some 6 GB). Now both are bounded (``key_partition_cache_max``,
``account_cache_bytes_max`` with a cheap size estimate), and a processor whose cache holds a fraction
of the accounts keeps the same books as one that holds them all. RSS at 10k, 100k and 1M accounts is
bench/history.py's job (a benchmark, not a timed test).
"""

from __future__ import annotations

import gc
import tracemalloc
from datetime import timedelta

import pytest

from processor import footprint
from processor.batch import BatchProcessor, Record
from processor.entrypoints.demo import generate
from processor.settings import PlanSettings
from projections.memory import MemoryStore
from tests.unit.builders import JAN, LOG, NOW, PARTITIONS, TOPICS, Feed, bill, enroll, pay


def _records(members: int, months: int, seed: int) -> list[Record]:
    program = generate(members=members, months=months, seed=seed)
    feed = Feed()
    return feed.records(*[e for _, phase in program.phases for e in phase])


def _run(records: list[Record], **bounds: int) -> tuple[MemoryStore, BatchProcessor, int, int]:
    """Fold the records in batches; the largest cache (accounts, estimated bytes) seen after a commit."""
    store = MemoryStore()
    proc = BatchProcessor(store, log_id=LOG, plan=PlanSettings(), topics=TOPICS, partitions=PARTITIONS,
                          clock=lambda: NOW, **bounds)
    most_accounts = most_bytes = 0
    for i in range(0, len(records), 500):
        result = proc.process(records[i:i + 500])
        store.commit_batch(result.write)
        proc.committed(result)
        most_accounts = max(most_accounts, len(proc._accounts))
        most_bytes = max(most_bytes, proc.cached_bytes)
    return store, proc, most_accounts, most_bytes


@pytest.mark.parametrize(("members", "months"), [(120, 12), (30, 60)])
def test_the_size_estimate_of_an_account_is_close_to_what_it_really_takes_and_errs_on_the_large_side(
    members: int, months: int,
) -> None:
    store, _, _, _ = _run(_records(members=members, months=months, seed=4))
    ratios = []
    kept = []  # kept alive, so each decode's allocation stays in the traced total
    gc.collect()
    tracemalloc.start()
    try:
        for account_id in store._accounts:
            before = tracemalloc.get_traced_memory()[0]
            (account,) = store.load_accounts([account_id]).values()
            account.payment_months, account.bill_months  # noqa: B018 - the lookups a bill or payment builds
            real = tracemalloc.get_traced_memory()[0] - before
            kept.append(account)
            ratios.append(footprint.account_bytes(account) / real)
    finally:
        tracemalloc.stop()
    assert len(ratios) > members * 0.8
    ratios.sort()
    assert ratios[len(ratios) // 20] >= 0.95, f"underestimates: {ratios[:5]}"  # 95% of accounts at or above
    assert ratios[-1] <= 1.35, f"overestimates: {ratios[-5:]}"


def test_the_account_cache_stays_within_its_byte_bound_and_the_books_are_the_same_as_unbounded() -> None:
    records = _records(members=400, months=6, seed=9)
    unbounded, _, all_accounts, all_bytes = _run(records)
    bound = all_bytes // 8
    bounded, proc, most_accounts, most_bytes = _run(records, account_cache_bytes_max=bound)
    assert all_accounts > 400 and most_accounts < all_accounts and len(proc._accounts) < all_accounts / 4
    # after each commit: within the bound, but for the accounts of the batch still in flight (none here)
    assert most_bytes <= bound
    assert proc.cached_bytes == sum(footprint.account_bytes(a) for a in proc._accounts.values())
    # a cold cache reloads from the store: the same books, discrepancy for discrepancy
    assert bounded.summary() == unbounded.summary()
    assert bounded.discrepancies(limit=10**6) == unbounded.discrepancies(limit=10**6)
    assert bounded.payer_unapplied() == unbounded.payer_unapplied()
    assert bounded._accounts == unbounded._accounts, "the same account headers, byte for byte"
    assert bounded._account_months == unbounded._account_months, "the same month rows, byte for byte"


def test_the_account_count_bound_still_holds_beside_the_byte_bound() -> None:
    records = _records(members=150, months=3, seed=2)
    _, _, most_accounts, _ = _run(records, account_cache_max=25)
    assert most_accounts <= 25


def test_the_key_partition_memo_is_bounded_and_partitions_are_still_checked() -> None:
    feed = Feed()
    events = []
    for i in range(3000):
        account = f"K{i:05d}"
        events += [enroll(account=account), bill(78_412, account=account, month=JAN),
                   pay(78_412, account=account, month=JAN)]
    records = feed.records(*events)
    wrong = records[0]
    misplaced = Record(wrong.topic, (wrong.partition + 1) % PARTITIONS, 10**6, wrong.key, wrong.value)
    store, proc, _, _ = _run([*records, misplaced], key_partition_cache_max=100)
    assert len(proc._key_partition) <= 100
    [dead] = store.dead_letters()
    assert dead.offset == 10**6 and "belongs on partition" in dead.reason
    counts = store.counts()
    assert counts.received == len(records) + 1 == counts.applied + counts.duplicates + counts.dead_lettered


def test_a_day_later_a_bounded_cache_still_finds_every_account_a_business_day_closes() -> None:
    """Business-day events judge accounts found through the store, cached or not (cold = warm)."""
    from tests.unit.builders import day

    feed = Feed()
    events = []
    for i in range(200):
        account = f"D{i:04d}"
        events += [enroll(account=account), bill(10_000, account=account, month=JAN, due_on=JAN)]
    events.append(day(JAN + timedelta(days=45)))
    records = feed.records(*events)
    small, _, _, _ = _run(records, account_cache_bytes_max=50_000)
    full, _, _, _ = _run(records)
    assert len(small.discrepancies(kind="missing_payment")) == 200
    assert small.discrepancies(limit=10**6) == full.discrepancies(limit=10**6)


def test_the_size_estimate_kept_across_batches_counts_only_changed_months_and_equals_a_full_count() -> None:
    """After each commit only the batch's dirty months are counted again (the cost of the estimate does
    not grow with history); what it keeps must still equal a count of the whole account."""
    _, proc, _, _ = _run(_records(members=80, months=14, seed=6))
    assert len(proc._accounts) > 60
    kept = dict(proc._account_bytes)
    for account_id, account in proc._accounts.items():
        assert kept[account_id] == footprint.account_bytes(account, None), account_id
    assert proc.cached_bytes == sum(kept.values())
