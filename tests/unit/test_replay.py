"""Replay (pure): the archive folded again with the processor's functions, statements on both time axes,
lenient time parsing, aging buckets. No I/O: archived events are built here."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

import pytest

from events.codec import body_hash, encode
from events.types import BROADCAST_ACCOUNT, BillingCycleClosed, InputEvent
from processor.settings import PlanSettings
from processor.state import decode_partition
from projections.model import ArchiveRow
from replay.archive import ArchivedEvent
from replay.fold import ReplayError, replay
from replay.render import report_csv, report_json, report_table
from replay.statements import (
    TimeParseError,
    bucket_labels,
    bucket_of,
    build_report,
    parse_known_at,
    parse_through,
)
from tests.unit.builders import (
    ACCOUNT,
    AGENCY,
    FEB,
    HOME,
    JAN,
    MAR,
    NOW,
    PARTITIONS,
    TOPICS,
    Feed,
    adjust,
    bill,
    day,
    enroll,
    make,
    pay,
    rate,
    run,
)

RATE = 78_412


def archived(events: Iterable[tuple[datetime, InputEvent]], partition: int = 0) -> list[ArchivedEvent]:
    out = []
    for seq, (at, e) in enumerate(events, start=1):
        body = encode(e)
        tag = type(e).__struct_config__.tag
        assert isinstance(tag, str)
        out.append(ArchivedEvent(seq, partition, e.event_id, tag, e.account_id, at, body, body_hash(body)))
    return out


def at(day_: date, hour: int = 12) -> datetime:
    return datetime(day_.year, day_.month, day_.day, hour, tzinfo=UTC)


# A small known archive: one member, agency pays January short, February adjusted, March billed later.
HISTORY = archived([
    (at(date(2026, 1, 2)), rate(RATE, event_id="rate-1")),
    (at(date(2026, 1, 2)), enroll(event_id="enr-1")),
    (at(date(2026, 1, 2)), bill(RATE, month=JAN, event_id="bill-jan", due_on=date(2026, 1, 10))),
    (at(date(2026, 1, 20)), pay(70_000, month=JAN, event_id="pay-jan-1")),
    (at(date(2026, 2, 2)), bill(RATE, month=FEB, event_id="bill-feb", due_on=date(2026, 2, 10))),
    (at(date(2026, 2, 3)), adjust(-1_000, month=FEB, event_id="adj-feb")),
    (at(date(2026, 3, 2)), bill(RATE, month=MAR, event_id="bill-mar", due_on=date(2026, 3, 10))),
    (at(date(2026, 3, 5)), pay(8_412, month=JAN, event_id="pay-jan-2")),  # closes January's underpayment
    (at(date(2026, 3, 6)), pay(12_345, month=None, event_id="pay-none", payer="AG-009")),  # unapplied cash
])


def report_at(known_at: datetime, through: date | None, plan: PlanSettings | None = None,
              **kw: str) -> dict:  # type: ignore[type-arg]
    plan = plan or PlanSettings()
    res = replay([e for e in HISTORY if e.recorded_at <= known_at], plan)
    return report_json(build_report(res, plan, known_at=known_at, through=through, **kw))  # type: ignore[arg-type]


def lines(report: dict) -> dict[str, dict]:  # type: ignore[type-arg]
    (member,) = report["members"]
    return {line["coverage_month"].isoformat(): line for line in member["lines"]}


def test_statement_as_known_at_the_end_of_february_through_february() -> None:
    r = report_at(parse_known_at("2026-02-28"), parse_through("2026-02"))
    jan, feb = lines(r)["2026-01-01"], lines(r)["2026-02-01"]
    assert (jan["billed_cents"], jan["adjustments_cents"], jan["paid_cents"], jan["refunds_cents"],
            jan["balance_cents"]) == (78_412, 0, 70_000, 0, 8_412)
    assert (feb["billed_cents"], feb["adjustments_cents"], feb["paid_cents"], feb["balance_cents"]) == (
        78_412, -1_000, 0, 77_412)
    assert r["members"][0]["totals"]["balance_cents"] == 85_824
    assert [d["kind"] for d in r["open_discrepancies"]] == ["underpaid"]
    assert r["open_discrepancies"][0]["actual_cents"] == 70_000
    # aged against R = 2026-02-28: January due 01-10 is 49 days late, February due 02-10 is 18 days late
    assert r["aging"]["totals_cents"] == {"not yet due": 0, "0-30 days": 77_412, "31-60 days": 8_412,
                                          "61-90 days": 0, "91-120 days": 0, "over 120 days": 0}
    (agency,) = r["payers"]
    assert agency["id"] == AGENCY
    assert agency["totals"] == {"billed_cents": 156_824, "adjustments_cents": -1_000, "paid_cents": 70_000,
                                "refunds_cents": 0, "balance_cents": 85_824, "unapplied_cents": 0}
    assert r["known_at"] == "2026-02-28T23:59:59.999999+00:00" and r["through"] == "2026-02-28"


def test_an_event_recorded_after_r_is_not_seen_and_a_month_after_e_is_not_reported() -> None:
    before = report_at(parse_known_at("2026-03-04"), None)
    after = report_at(parse_known_at("2026-03-06"), None)
    # the March bill was recorded on 03-02: seen by both; the January top-up on 03-05 only by the later R
    assert lines(before)["2026-01-01"]["balance_cents"] == 8_412
    assert lines(after)["2026-01-01"]["balance_cents"] == 0
    assert [d["kind"] for d in before["open_discrepancies"]] == ["underpaid"]
    assert [d["kind"] for d in after["open_discrepancies"]] == ["unmatched_payment"]  # the 03-06 cash
    assert "2026-03-01" in lines(before)
    through_jan = report_at(parse_known_at("2026-03-06"), parse_through("2026-01-31"))
    assert list(lines(through_jan)) == ["2026-01-01"]
    assert through_jan["members"][0]["totals"]["billed_cents"] == 78_412
    # the payment naming no month, recorded 03-06 12:00 UTC: unapplied cash of its payer from then on
    later = report_at(parse_known_at("2026-03-06T12:00:00Z"), None, payer_id="AG-009")
    assert later["payers"][0]["totals"]["unapplied_cents"] == 12_345
    earlier = report_at(parse_known_at("2026-03-06T11:59:59Z"), None, payer_id="AG-009")
    assert earlier["payers"][0]["totals"]["unapplied_cents"] == 0


def test_aging_buckets_and_time_zone_are_plan_settings() -> None:
    plan = PlanSettings(aging_buckets_days=(15, 45), timezone="America/Los_Angeles")
    known = parse_known_at("2026-02-28", tz=plan.timezone)
    assert known.isoformat() == "2026-02-28T23:59:59.999999-08:00"
    r = report_at(known, None, plan)
    assert r["aging"]["buckets"] == ["not yet due", "0-15 days", "16-45 days", "over 45 days"]
    assert r["aging"]["totals_cents"] == {"not yet due": 0, "0-15 days": 0, "16-45 days": 77_412,
                                          "over 45 days": 8_412}
    assert r["timezone"] == "America/Los_Angeles"
    with pytest.raises(ValueError):
        PlanSettings(aging_buckets_days=(60, 30))
    with pytest.raises(ValueError):
        PlanSettings(timezone="Mars/Olympus")


def test_bucket_boundaries() -> None:
    b = (30, 60, 90, 120)
    assert bucket_labels(b)[0] == "not yet due"
    assert [bucket_of(d, b) for d in (-3, 0, 1, 30, 31, 120, 121)] == [
        "not yet due", "0-30 days", "0-30 days", "0-30 days", "31-60 days", "91-120 days", "over 120 days"]


def test_lenient_times_are_read_and_echoed_in_full() -> None:
    now = datetime(2026, 5, 1, 8, 30, tzinfo=UTC)
    assert parse_known_at(None, now=now) == now
    assert parse_known_at("now", now=now) == now
    assert parse_known_at("2026-02").isoformat() == "2026-02-28T23:59:59.999999+00:00"
    assert parse_known_at("2026/03/05") == parse_known_at("2026-03-05") == parse_known_at("5 Mar 2026")
    assert parse_known_at("2026-03-05T10:00Z").isoformat() == "2026-03-05T10:00:00+00:00"
    assert parse_known_at("2026-03-05 10:00", tz="America/New_York").isoformat() == "2026-03-05T10:00:00-05:00"
    assert parse_through("2026-02") == date(2026, 2, 28)
    assert parse_through("2026-02-01") == date(2026, 2, 1)
    assert parse_through(None) is None
    with pytest.raises(TimeParseError):
        parse_known_at("last tuesday")
    with pytest.raises(TimeParseError):
        parse_through("soon")


def test_csv_and_table_carry_the_same_totals() -> None:
    plan = PlanSettings()
    known = parse_known_at("2026-02-28")
    res = replay([e for e in HISTORY if e.recorded_at <= known], plan)
    report = build_report(res, plan, known_at=known, through=None, known_at_input="2026-02-28")
    text = report_csv(report)
    rows = text.splitlines()
    assert rows[0].startswith("record,known_at,through,id,coverage_month")
    assert any(r.startswith("member_total,2026-02-28T23:59:59.999999+00:00,,M000001,,,156824,-1000,70000,0,85824")
               for r in rows)
    table = report_table(report)
    assert "$858.24" in table and "underpaid" in table and "2026-02-28T23:59:59.999999+00:00" in table


def test_an_archived_event_the_fold_rejects_is_a_replay_error() -> None:
    twice = archived([(at(JAN), bill(RATE, event_id="b1", bill_id="B1")),
                      (at(JAN), bill(RATE, event_id="b2", bill_id="B1"))])
    with pytest.raises(ReplayError, match="seq 2"):
        replay(twice, PlanSettings())
    assert [r.seq for r in replay(twice, PlanSettings(), strict=False).rejected] == [2]


def _archived_rows(rows: list[ArchiveRow]) -> list[ArchivedEvent]:
    return [ArchivedEvent(i, r.partition, r.event_id, r.event_type, r.account_id, r.recorded_at, r.body, r.body_hash)
            for i, r in enumerate(rows, start=1)]


def test_replay_of_the_batch_processors_archive_equals_its_store() -> None:
    """The live path (BatchProcessor + MemoryStore, a tiny account cache so DayClosed goes through
    due_accounts) and replay of its archive leave the same snapshots, months and payer cash."""
    proc, store = make()
    proc.account_cache_max = 1
    feed = Feed()
    others = [f"M{n:06d}" for n in range(2, 12)]
    events: list[InputEvent] = [rate(RATE), enroll()]
    for a in others:
        events += [enroll(account=a), bill(RATE, month=JAN, account=a, due_on=JAN)]
    # never enrolled, billed for two plans: billed_not_enrolled opens, then its amount changes
    events += [bill(1_000, month=JAN, account="M000099", plan="DENTAL"), bill(2_000, month=JAN, account="M000099")]
    events += [bill(RATE, month=JAN, due_on=JAN), pay(50_000, month=JAN), bill(RATE, month=FEB, due_on=FEB),
               pay(RATE, month=JAN, account=others[0]), pay(999, month=None, account=others[1], payer="AG-7")]
    for batch in (events[:7], events[7:]):
        run(proc, store, feed.records(*batch))
    for d in range(0, 80, 9):
        run(proc, store, feed.records(day(JAN + timedelta(days=d))))
    # billing for February closes: every account of each partition is judged (covered, not billed)
    cycle = BillingCycleClosed(event_id="cycle-2026-02", account_id=BROADCAST_ACCOUNT, effective_on=FEB,
                               occurred_at=NOW, cycle_month=FEB)
    run(proc, store, [feed.raw(TOPICS.control, p, None, encode(cycle)) for p in range(PARTITIONS)])
    res = replay(_archived_rows(store.archive), PlanSettings())
    assert res.events_replayed == len(store.archive)
    live_accounts = store.load_accounts(sorted(store._accounts))
    assert res.accounts == live_accounts
    assert {p: decode_partition(b) for p, b in store._partitions.items()} == res.partitions
    assert res.payer_cash() == store.payer_unapplied()
    (unenrolled,) = [d for d in res.discrepancies.values() if d.kind == "billed_not_enrolled"]
    assert (unenrolled.status, unenrolled.actual_cents) == ("open", 3_000)
    missing = [d for d in res.discrepancies.values() if d.kind == "missing_payment"]
    assert len(missing) >= len(others) - 1
    live = {d.discrepancy_id: d for d in store.discrepancies(limit=10**6)}
    assert live == res.discrepancies
    home = res.accounts[ACCOUNT]
    assert home.partition == HOME
    bal = store.balance(ACCOUNT)
    assert bal is not None
    assert bal.months == sorted((m for m in res.month_rows() if m.account_id == ACCOUNT),
                                key=lambda m: m.coverage_month)
    assert NOW == res.last_recorded_at
    assert {"billed_not_enrolled", "missing_payment"} <= {d.kind for d in res.discrepancies.values()}
    assert sum(r.event_type == "billing_cycle_closed" for r in store.archive) == PARTITIONS


def test_statements_show_refunds_and_their_lines_add_up_to_the_balance() -> None:
    """A credit refunded on a closed account: billed + adjustments - paid + refunds = balance, on the
    member's statement and on the paying agency's."""
    from events.types import RefundIssued

    refund = RefundIssued(event_id="rf-jan", account_id=ACCOUNT, effective_on=date(2026, 2, 10),
                          occurred_at=at(date(2026, 2, 10)), refund_id="RF-1", payee_id=AGENCY, amount_cents=5_000,
                          method="check", reason="credit on a closed account", coverage_month=JAN)
    history = archived([
        (at(date(2026, 1, 2)), rate(RATE, event_id="rate-1")),
        (at(date(2026, 1, 2)), enroll(event_id="enr-1", end=date(2026, 1, 31))),
        (at(date(2026, 1, 2)), bill(RATE, month=JAN, event_id="bill-jan", due_on=date(2026, 1, 10))),
        (at(date(2026, 1, 20)), pay(RATE + 5_000, month=JAN, event_id="pay-jan")),
        (at(date(2026, 2, 10)), refund),
    ])
    plan = PlanSettings()
    known = parse_known_at("2026-03-01")
    r = report_json(build_report(replay(history, plan), plan, known_at=known, through=parse_through("2026-01")))
    (member,) = r["members"]
    (jan,) = member["lines"]
    assert (jan["billed_cents"], jan["paid_cents"], jan["refunds_cents"], jan["balance_cents"]) == (
        RATE, RATE + 5_000, 5_000, 0)
    (agency,) = r["payers"]
    assert agency["totals"] == {"billed_cents": RATE, "adjustments_cents": 0, "paid_cents": RATE + 5_000,
                                "refunds_cents": 5_000, "balance_cents": 0, "unapplied_cents": 0}
    assert r["open_discrepancies"] == []  # the refund settled the refund_due
