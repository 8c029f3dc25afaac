"""The streaming replay (replay/stream.py: accounts a group at a time, broadcasts merged in) gives the
same rows as the plain replay of the archive in seq order, on any workload and any group size."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.codec import EventDecodeError, decode_input, encode
from events.types import Event, RemittanceReceived, tag_of
from processor.batch import partition_for
from processor.settings import PlanSettings
from replay.archive import ArchivedEvent
from replay.fold import ReplayError, ReplayResult, replay
from replay.stream import PartitionReplay, by_partition, replay_streamed
from replay.verify import replayed_tables
from tests.unit.builders import bill, day, enroll, pay, rate
from tests.unit.test_properties import accounts_of, fold_in_batches, program_records
from tests.unit.test_properties import events as random_event

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def archived(store_archive: list[Any]) -> list[ArchivedEvent]:
    return [ArchivedEvent(seq=i, partition=r.partition, event_id=r.event_id, event_type=r.event_type,
                          account_id=r.account_id, recorded_at=r.recorded_at, body=r.body)
            for i, r in enumerate(store_archive, start=1)]


def as_archive(events: list[Event], partitions: int) -> list[ArchivedEvent]:
    """Events archived as the processor archives them: an account's on its partition, a broadcast on each."""
    rows: list[ArchivedEvent] = []
    for event in events:
        body = encode(event)
        targets = range(partitions) if type(event).BROADCAST else [
            partition_for(event.account_id.encode(), partitions)]
        for p in targets:
            seq = len(rows) + 1
            rows.append(ArchivedEvent(seq, p, event.event_id, tag_of(type(event)), event.account_id,
                                      T0 + timedelta(milliseconds=seq), body))
    return rows


def assert_same_books(plain: ReplayResult, streamed: ReplayResult) -> None:
    mine, theirs = replayed_tables(streamed), replayed_tables(plain)
    for table in theirs:
        assert mine[table] == theirs[table], table
    assert streamed.events_replayed == plain.events_replayed
    assert [(r.seq, r.reason) for r in streamed.rejected] == [(r.seq, r.reason) for r in plain.rejected]
    assert (streamed.last_seq, streamed.last_recorded_at) == (plain.last_seq, plain.last_recorded_at)
    assert streamed.payer_unapplied == plain.payer_unapplied


@cache
def demo_archive(seed: int, batch: int) -> tuple[ArchivedEvent, ...]:
    """The demo program folded live (batch processor, in-memory store), as its archive."""
    records = program_records(seed)
    assert accounts_of(records)
    return tuple(archived(fold_in_batches(records, batch).archive))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 5), batch=st.sampled_from([1, 37, 10_000]), accounts_max=st.integers(1, 60),
       bytes_max=st.sampled_from([1, 2_000, 50_000, 10**9]))
def test_the_demo_program_streamed_in_groups_of_any_size_replays_as_the_archive_in_seq_order(
    seed: int, batch: int, accounts_max: int, bytes_max: int,
) -> None:
    rows = list(demo_archive(seed, batch))
    plan = PlanSettings()
    plain = replay(rows, plan)
    assert plain.accounts and plain.discrepancies and plain.partitions
    assert_same_books(plain, replay_streamed(rows, plan, accounts_max=accounts_max, bytes_max=bytes_max))


ACCOUNT_IDS = st.sampled_from(["M000001", "M000002", "M000003", "M000004", "M000005", "payer:AG-1"])


@st.composite
def workloads(draw: st.DrawFn) -> list[Event]:
    """Random events (the fold's own property strategy), spread over more accounts."""
    out: list[Event] = []
    for n in range(draw(st.integers(0, 60))):
        event = draw(random_event(n))
        if not type(event).BROADCAST:
            event = msgspec.structs.replace(event, account_id=draw(ACCOUNT_IDS))
        try:
            out.append(decode_input(encode(event)))
        except EventDecodeError:
            continue
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=workloads(), partitions=st.integers(1, 3), accounts_max=st.integers(1, 4))
def test_random_workloads_streamed_replay_as_in_seq_order_rejections_included(
    events: list[Event], partitions: int, accounts_max: int,
) -> None:
    rows = as_archive(events, partitions)
    plan = PlanSettings()
    plain = replay(rows, plan, strict=False)
    assert_same_books(plain, replay_streamed(rows, plan, strict=False, accounts_max=accounts_max))


def test_a_partition_with_broadcasts_only_has_its_partition_state_and_no_accounts() -> None:
    rows = as_archive([rate(70_000, month_from=date(2026, 1, 1)), day(date(2026, 1, 31))], partitions=2)
    plain, streamed = replay(rows, PlanSettings()), replay_streamed(rows, PlanSettings())
    assert sorted(streamed.partitions) == [0, 1] and not streamed.accounts
    assert_same_books(plain, streamed)


def test_a_paid_account_is_offered_none_of_a_thousand_business_days_and_an_unpaid_one_few() -> None:
    plan = PlanSettings()
    days = [day(date(2026, 1, 1) + timedelta(days=i), event_id=f"day-{i}") for i in range(1000)]
    events: list[Event] = [rate(78_412, month_from=date(2026, 1, 1)), enroll(account="PAID"), enroll(account="LATE"),
                           bill(78_412, account="PAID", event_id="b1"), bill(78_412, account="LATE", event_id="b2"),
                           pay(78_412, account="PAID", event_id="p1"), *days]
    rows = as_archive(events, partitions=1)
    (p, broadcasts, accounts), = by_partition(rows)
    part = PartitionReplay(plan, p, broadcasts)
    groups = list(part.groups(accounts))
    # the unpaid month is offered the day its grace period ends (missing_payment opens), then no more
    assert [g.days_offered for g in groups] == [1]
    assert groups[0].accounts["LATE"].open and not groups[0].accounts["PAID"].open
    assert_same_books(replay(rows, plan), replay_streamed(rows, plan))


def test_an_account_event_archived_under_another_account_stops_the_replay() -> None:
    rows = [ArchivedEvent(r.seq, r.partition, r.event_id, r.event_type, "A2", r.recorded_at, r.body)
            for r in as_archive([enroll(account="A1")], partitions=1)]
    with pytest.raises(ReplayError, match="archived for account A2"):
        replay_streamed(rows, PlanSettings())


def remittance(payer: str, n: int) -> RemittanceReceived:
    return RemittanceReceived(
        event_id=f"rem-{n}", account_id=f"payer:{payer}", effective_on=date(2026, 2, 2), occurred_at=T0,
        remittance_id=f"R{n}", payer_id=payer, method="payroll", payment_date=date(2026, 2, 2) + timedelta(days=n),
        trace_number=f"TRN{n}", total_cents=20_000, lines_total_cents=20_000, line_count=2,
    )


def test_the_partition_state_holds_the_remittances_due_of_every_group() -> None:
    rows = as_archive([remittance("AG-1", 1), remittance("AG-2", 2), remittance("AG-3", 3)], partitions=1)
    plain = replay(rows, PlanSettings())
    streamed = replay_streamed(rows, PlanSettings(), accounts_max=1)
    assert len(plain.partitions[0].remittances_due) == 3
    assert_same_books(plain, streamed)


def test_an_account_due_on_a_rejected_business_day_is_offered_the_next_one() -> None:
    events: list[Event] = [
        day(date(2026, 3, 1), event_id="d-mar"),
        remittance("AG-1", 1),  # its lines' window ends 3 Feb + 5 days: judged by a later business day
        day(date(2026, 2, 15), event_id="d-back"),  # before the closed day: rejected, the payer was due
        day(date(2026, 3, 2), event_id="d-next"),
    ]
    rows = as_archive(events, partitions=1)
    plan = PlanSettings(remittance_lines_days=5)
    plain = replay(rows, plan, strict=False)
    assert [r.event_id for r in plain.rejected] == ["d-back"]
    assert [(d.kind, d.opened_by) for d in plain.discrepancies.values()] == [("remittance_total_mismatch", "d-next")]
    assert_same_books(plain, replay_streamed(rows, plan, strict=False))


def test_a_group_holds_at_most_its_accounts_and_bytes_and_never_splits_an_account() -> None:
    rows = list(demo_archive(2, 10_000))
    plan = PlanSettings()
    for accounts_max, bytes_max in ((3, 10**9), (10**6, 4_000), (1, 1)):
        seen: list[str] = []
        for p, broadcasts, account_rows in by_partition(rows):
            replay_p = PartitionReplay(plan, p, broadcasts)
            sizes: dict[str, int] = {}
            for r in account_rows:
                sizes[r.account_id] = sizes.get(r.account_id, 0) + len(r.body)
            for group in replay_p.groups(account_rows, accounts_max=accounts_max, bytes_max=bytes_max):
                assert 1 <= len(group.accounts) <= accounts_max
                # the group closed at the first account past its bytes, never within one
                assert sum(sizes[a] for a in group.accounts) - max(sizes[a] for a in group.accounts) < bytes_max
                seen.extend(group.accounts)
        assert len(seen) == len(set(seen)) == len({r.account_id for r in rows if r.account_id != "*"})


def test_streaming_the_archive_lets_each_group_go_before_it_folds_the_next(monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory is one group of accounts, not two: the group last handed to the consumer is no longer held
    while the next one is folded (seen from inside each fold: no GroupResult alive)."""
    import gc

    import replay.stream as stream
    from replay.parallel import Discard

    parts = {p: (broadcasts, rows) for p, broadcasts, rows in by_partition(demo_archive(2, 10_000))}
    monkeypatch.setattr(stream, "archive_partitions", lambda _conn: sorted(parts))
    monkeypatch.setattr(stream, "read_broadcasts", lambda _conn, p: parts[p][0])
    monkeypatch.setattr(stream, "read_accounts", lambda _conn, p, accounts=None: iter(parts[p][1]))
    alive: list[int] = []
    fold = PartitionReplay.fold_group

    def counting(self: PartitionReplay, rows: list[ArchivedEvent]) -> stream.GroupResult:
        gc.collect()
        alive.append(sum(isinstance(o, stream.GroupResult) for o in gc.get_objects()))
        return fold(self, rows)

    monkeypatch.setattr(PartitionReplay, "fold_group", counting)
    totals = stream.stream_archive(None, PlanSettings(), Discard(), accounts_max=3)  # type: ignore[arg-type]
    assert totals.groups == len(alive) > len(parts)
    assert alive == [0] * len(alive)
