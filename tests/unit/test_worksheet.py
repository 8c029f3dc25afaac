"""The agency reconciliation worksheet, worked out by hand on a small agency month, and on the demo."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from events.codec import body_hash, encode
from events.types import InputEvent, PaymentReceived, RemittanceReceived
from processor.rules.fold import fold_event
from processor.settings import PlanSettings
from replay.archive import ArchivedEvent
from replay.books import books_from
from replay.worksheet import WorksheetError, parse_month, worksheet
from tests.unit.builders import AGENCY, Ledger, bill, day, enroll, pay, rate

MAR = date(2026, 3, 1)
RATE = 78_412
R = datetime(2026, 4, 20, tzinfo=UTC)


def archived(events: Iterable[InputEvent], at: datetime = datetime(2026, 3, 10, tzinfo=UTC)) -> list[ArchivedEvent]:
    """The events as the ledger archives them: each followed by what it made the ledger post itself
    (a remittance line's report to its payer, a cash application's payment), as the relay brings them."""
    ledger = Ledger()
    ordered: list[InputEvent] = []
    pending = list(events)
    while pending:
        event = pending.pop(0)
        ordered.append(event)
        reached = fold_event(event, ledger.part, ledger.plan, ledger.account, lambda: list(ledger.accounts.values()))
        pending[:0] = [d for _, out in reached for d in out.derived]
    out = []
    for seq, e in enumerate(ordered, start=1):
        body = encode(e)
        tag = type(e).__struct_config__.tag
        assert isinstance(tag, str)
        out.append(ArchivedEvent(seq, 0, e.event_id, tag, e.account_id, at, body, body_hash(body)))
    return out


def remittance(total: int, lines_total: int, lines: int, *, event_id: str = "remit-03") -> RemittanceReceived:
    return RemittanceReceived(
        event_id=event_id, account_id=f"payer:{AGENCY}", effective_on=date(2026, 3, 5),
        occurred_at=datetime(2026, 3, 5, 16, tzinfo=UTC), remittance_id="R-03", payer_id=AGENCY, method="ach",
        payment_date=date(2026, 3, 5), trace_number="TRN-03", total_cents=total, lines_total_cents=lines_total,
        line_count=lines,
    )


def line(account: str, amount: int) -> InputEvent:
    return pay(amount, month=MAR, account=account, event_id=f"pay-{account}", payment_id=f"P-{account}",
               trace="TRN-03", remittance="R-03")


def agency_month(*lines: InputEvent, remit: RemittanceReceived, closed_on: date | None = date(2026, 4, 15)
                 ) -> list[ArchivedEvent]:
    """Three members of AG-001 billed $784.12 each for March 2026, due March 1; the agency's remittance."""
    events: list[InputEvent] = [rate(RATE, event_id="rate", month_from=MAR)]
    for m in ("M1", "M2", "M3"):
        events += [enroll(event_id=f"enr-{m}", account=m, begin=MAR),
                   bill(RATE, month=MAR, account=m, event_id=f"bill-{m}", due_on=MAR)]
    events += [*lines, remit]
    if closed_on is not None:
        events.append(day(closed_on, event_id="day-close"))
    return archived(events)


def test_a_month_with_a_missing_an_overpaid_and_an_unmatched_line_leaves_nothing_unexplained() -> None:
    # By hand: billed 3 x $784.12 = $2,352.36. The remittance pays $1,738.24 in three lines: M1 $784.12
    # (right), M2 $804.12 ($20.00 over), X9 $150.00 (nobody known); M3 has no line. Variance $1,738.24 -
    # $2,352.36 = -$614.12 = missing M3 -$784.12 + overpaid M2 +$20.00 + unmatched X9 +$150.00.
    rows = agency_month(line("M1", RATE), line("M2", RATE + 2_000), line("X9", 15_000),
                        remit=remittance(173_824, 173_824, 3))
    ws = worksheet(books_from(rows, PlanSettings(), known_at=R), AGENCY, MAR)
    assert (ws.billed_cents, ws.adjustments_cents, ws.remitted_cents, ws.lines_cents) == (235_236, 0, 173_824, 173_824)
    assert (ws.applied_cents, ws.unapplied_cents, ws.variance_cents) == (158_824, 15_000, -61_412)
    by_kind = {e.kind: (e.account_id, e.status, e.cents) for e in ws.exceptions}
    assert by_kind == {"missing_payment": ("M3", "open", -78_412), "overpaid": ("M2", "open", 2_000),
                       "unmatched_payment": ("X9", "open", 15_000)}
    assert sum(e.cents for e in ws.exceptions) == ws.variance_cents
    assert ws.unexplained_cents == 0 and ws.balanced and ws.rule_items == []
    (r,) = ws.remittances
    assert (r.remittance_id, r.method, r.trace_number, r.payment_date, r.total_cents, r.line_count) == (
        "R-03", "ach", "TRN-03", date(2026, 3, 5), 173_824, 3)
    doc = ws.to_json()
    assert {k: doc[k] for k in ("billed_cents", "remitted_cents", "lines_cents", "applied_cents", "unapplied_cents",
                                "unexplained_cents")} == {
        "billed_cents": 235_236, "remitted_cents": 173_824, "lines_cents": 173_824, "applied_cents": 158_824,
        "unapplied_cents": 15_000, "unexplained_cents": 0}
    assert sorted((e["kind"], e["cents"]) for e in doc["exceptions"]) == [
        ("missing_payment", -78_412), ("overpaid", 2_000), ("unmatched_payment", 15_000)]
    assert all(len(e["discrepancy_id"]) == 24 for e in doc["exceptions"])


def test_a_line_the_remittance_lists_but_the_ledger_never_received_is_its_mismatch() -> None:
    # The remittance pays $1,888.24 for four lines; the ledger got three ($1,738.24). The ledger judges the
    # remittance against the lines it posted: $150.00 more than them, its remittance_total_mismatch.
    rows = agency_month(line("M1", RATE), line("M2", RATE + 2_000), line("X9", 15_000),
                        remit=remittance(188_824, 188_824, 4))
    ws = worksheet(books_from(rows, PlanSettings(), known_at=R), AGENCY, MAR)
    assert ws.variance_cents == 188_824 - 235_236
    assert ws.unexplained_cents == 0 and ws.balanced and ws.unexplained_items == []
    mismatch = next(e for e in ws.exceptions if e.kind == "remittance_total_mismatch")
    assert (mismatch.cents, mismatch.status) == (15_000, "open")


def test_a_line_missing_before_the_remittance_is_judged_is_flagged() -> None:
    # As known before the day past the remittance's lines window closed: nothing has judged it yet.
    rows = agency_month(line("M1", RATE), line("M2", RATE + 2_000), line("X9", 15_000),
                        remit=remittance(188_824, 188_824, 4), closed_on=None)
    ws = worksheet(books_from(rows, PlanSettings(), known_at=R), AGENCY, MAR)
    assert ws.unexplained_cents == 15_000 and not ws.balanced
    flag = next(i for i in ws.unexplained_items if i.kind == "lines_not_received")
    assert "4 lines" in flag.description and "has not judged it yet" in flag.description


def test_a_payment_total_above_its_lines_is_explained_by_the_remittance_mismatch() -> None:
    rows = agency_month(line("M1", RATE), line("M2", RATE), line("M3", RATE),
                        remit=remittance(3 * RATE + 500, 3 * RATE, 3))
    ws = worksheet(books_from(rows, PlanSettings(), known_at=R), AGENCY, MAR)
    assert ws.variance_cents == 500 and ws.unexplained_cents == 0
    (e,) = ws.exceptions
    assert (e.kind, e.account_id, e.cents, e.status) == ("remittance_total_mismatch", f"payer:{AGENCY}", 500, "open")


def test_before_the_grace_period_ends_an_unpaid_bill_is_not_yet_due_not_unexplained() -> None:
    rows = agency_month(line("M1", RATE), line("M2", RATE), remit=remittance(2 * RATE, 2 * RATE, 2),
                        closed_on=date(2026, 3, 20))
    ws = worksheet(books_from(rows, PlanSettings(), known_at=R), AGENCY, MAR)
    assert ws.variance_cents == -RATE and ws.unexplained_cents == 0 and ws.exceptions == []
    (item,) = ws.rule_items
    assert (item.kind, item.rule, item.account_id, item.cents) == ("not_yet_due", "grace_period", "M3", -RATE)


def test_csv_and_xlsx_carry_the_same_figures() -> None:
    from openpyxl import load_workbook

    rows = agency_month(line("M1", RATE), line("M2", RATE + 2_000), line("X9", 15_000),
                        remit=remittance(173_824, 173_824, 3))
    ws = worksheet(books_from(rows, PlanSettings(), known_at=R), AGENCY, MAR)
    table = list(csv.DictReader(io.StringIO(ws.to_csv())))
    summary = {r["name"]: int(r["cents"]) for r in table if r["record"] == "summary"}
    assert summary["variance_cents"] == -61_412 and summary["unexplained_cents"] == 0
    assert sorted(int(r["cents"]) for r in table if r["record"] == "exception") == [-78_412, 2_000, 15_000]
    book = load_workbook(io.BytesIO(ws.to_xlsx()))
    assert book.sheetnames == ["Summary", "Remittances", "Reconciliation", "Exceptions", "Members"]
    cells = {row[0]: row[1] for row in book["Summary"].iter_rows(min_row=4, values_only=True) if row[0]}
    assert Decimal(str(cells["Billed"])) == Decimal("2352.36")
    assert Decimal(str(cells["Variance (remitted - net billed)"])) == Decimal("-614.12")
    assert Decimal(str(cells["Unexplained remainder"])) == 0
    exceptions = list(book["Exceptions"].iter_rows(min_row=2, values_only=True))
    assert sorted(Decimal(str(r[7])) for r in exceptions) == [Decimal("-784.12"), Decimal("20.00"), Decimal("150.00")]


def test_a_month_is_read_as_yyyy_mm() -> None:
    assert parse_month("2026-03") == MAR and parse_month("2026-3") == MAR
    with pytest.raises(WorksheetError, match="2026-13"):
        parse_month("2026-13")


# -- the demo's agencies -------------------------------------------------------------------------------


def demo_archive(members: int, months: int, seed: int) -> list[ArchivedEvent]:
    """The demo program folded by the batch processor into an in-memory store (the payments the ledger
    posts for cash applications fed back, as the relay does), and its archive as replay reads it."""
    from processor.batch import BatchProcessor, Record
    from processor.entrypoints.demo import generate
    from projections.memory import MemoryStore
    from projections.model import PAYMENTS_STREAM
    from tests.unit.builders import LOG, NOW, PARTITIONS, TOPICS, Feed, partition_for

    program = generate(members=members, months=months, seed=seed)
    feed = Feed()
    store = MemoryStore()
    proc = BatchProcessor(store, log_id=LOG, plan=PlanSettings(), topics=TOPICS, partitions=PARTITIONS,
                          clock=lambda: NOW)
    for _, events in program.phases:
        pending = feed.records(*events)
        while pending:
            result = proc.process(pending)
            store.commit_batch(result.write)
            proc.committed(result)
            pending = [feed.raw(TOPICS.payments, partition_for(row.key.encode(), PARTITIONS), row.key.encode(),
                                row.body) for row in result.write.outbox if row.stream == PAYMENTS_STREAM]
    assert all(isinstance(r, Record) for r in pending)
    return [ArchivedEvent(seq, a.partition, a.event_id, a.event_type, a.account_id, a.recorded_at, a.body,
                          a.body_hash) for seq, a in enumerate(store.archive, start=1)]


@pytest.mark.parametrize("seed", [3, 6])
def test_every_agency_month_of_the_demo_leaves_nothing_unexplained(seed: int) -> None:
    from collections import Counter

    from replay.worksheet import worksheets
    from tests.unit.builders import NOW

    books = books_from(demo_archive(300, 12, seed), PlanSettings(), known_at=NOW)
    sheets = worksheets(books)
    assert len({w.payer_id for w in sheets}) >= 3 and len({w.month for w in sheets}) == 12
    flagged = [(w.payer_id, f"{w.month:%Y-%m}", w.unexplained_cents, [i.description for i in w.unexplained_items])
               for w in sheets if not w.balanced]
    assert flagged == []
    kinds = Counter(e.kind for w in sheets for e in w.exceptions if e.cents)
    # the demo's errors that fell on accounts an agency pays are all on some worksheet, each explaining
    # cents of a variance (the demo places payment errors on direct-pay members too, off the worksheets)
    from processor.entrypoints.demo import generate

    program = generate(members=300, months=12, seed=seed)
    agency_paid = {e.account_id for _, events in program.phases for e in events
                   if isinstance(e, PaymentReceived) and e.remittance_id is not None}
    on_agencies = {kind for kind, account, _ in program.expected if account in agency_paid}
    agency_kinds = {"missing_payment", "underpaid", "overpaid", "duplicate_payment", "paid_after_termination"}
    assert {"unmatched_payment", "remittance_total_mismatch"} | (agency_kinds & on_agencies) <= set(kinds)
    assert len(agency_kinds & on_agencies) >= 3  # the check above is not vacuous
    assert any(i.kind == "cash_applied" for w in sheets for i in w.items)  # misdirected lines applied later
    assert any(i.kind == "refund" for w in sheets for i in w.items)
    for w in sheets:
        assert w.variance_cents == sum(e.cents for e in w.exceptions) + sum(i.cents for i in w.rule_items)
