"""Aging: each charge aged from its own date, in the plan's buckets, with totals that tie to the balance."""

from __future__ import annotations

from datetime import UTC, date, datetime

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from events.types import InputEvent
from processor.rules.base import Rejected
from processor.settings import PlanSettings
from replay.aging import aging
from replay.books import books_from
from replay.statements import payer_statements
from tests.unit.builders import AGENCY, Ledger, adjust, bill, enroll, pay, rate, reverse
from tests.unit.test_worksheet import archived, demo_archive

SEP, DEC = date(2026, 9, 1), date(2026, 12, 1)


def issued(event: InputEvent, when: datetime) -> InputEvent:
    return msgspec.structs.replace(event, occurred_at=when)


def test_a_retroactive_bill_is_aged_from_the_day_it_was_billed_not_the_months_due_date() -> None:
    # September is billed in August and paid; in December billing sends a further September bill (a tier
    # change it missed), still naming September 1 as its due date.
    events: list[InputEvent] = [
        rate(78_412, month_from=SEP), enroll(begin=SEP),
        issued(bill(78_412, month=SEP, event_id="bill-sep", due_on=SEP), datetime(2026, 8, 15, tzinfo=UTC)),
        pay(78_412, month=SEP, event_id="pay-sep"),
        issued(bill(10_000, month=SEP, event_id="bill-sep-retro", bill_id="B-SEP-2", due_on=SEP),
               datetime(2026, 12, 1, 9, tzinfo=UTC)),
    ]
    books = books_from(archived(events), PlanSettings(), known_at=datetime(2026, 12, 15, tzinfo=UTC))
    ages = aging(books.accounts.values(), books.plan, date(2026, 12, 15), issued_on=books.issued_on)
    (charge,) = ages.charges
    assert (charge.ref, charge.due_on, charge.aged_from, charge.days_past_due, charge.bucket) == (
        "B-SEP-2", SEP, DEC, 14, "0-30 days")
    assert charge.outstanding_cents == 10_000  # the September payment settled the first bill, not this one
    assert ages.totals() == {"not yet due": 0, "0-30 days": 10_000, "31-60 days": 0, "61-90 days": 0,
                             "91-120 days": 0, "over 120 days": 0}
    # without the day it was billed it would be 105 days old: the defect the issue describes
    assert aging(books.accounts.values(), books.plan, date(2026, 12, 15)).charges[0].bucket == "91-120 days"


MONTHS = [date(2026, 1, 1), date(2026, 2, 1), date(2026, 3, 1)]
ops = st.lists(st.one_of(
    st.tuples(st.just("bill"), st.sampled_from(MONTHS), st.integers(0, 90_000), st.integers(0, 40)),
    st.tuples(st.just("pay"), st.sampled_from(MONTHS), st.integers(1, 90_000), st.sampled_from([AGENCY, "AG-2"])),
    st.tuples(st.just("adj"), st.sampled_from(MONTHS), st.integers(-50_000, 50_000), st.just(0)),
    st.tuples(st.just("rev"), st.integers(0, 20), st.just(0), st.just(0)),
), max_size=30)


@settings(max_examples=150, deadline=None)
@given(ops=ops, as_of=st.dates(min_value=date(2025, 12, 1), max_value=date(2026, 9, 1)))
def test_aged_outstanding_plus_credits_is_the_balance_for_every_member_and_payer(ops: list[tuple], as_of: date) -> None:  # type: ignore[type-arg]
    led = Ledger()
    led.apply(enroll(), enroll(account="M000002"))
    pays: list[str] = []
    for n, (op, a, b, c) in enumerate(ops):
        account = "M000001" if n % 3 else "M000002"
        try:
            if op == "bill":
                led.apply(bill(b, month=a, account=account, event_id=f"b{n}", due_on=a.replace(day=1 + c % 28),
                               agency=AGENCY if n % 2 else "AG-2"))
            elif op == "pay":
                led.apply(pay(b, month=a, account=account, event_id=f"p{n}", payment_id=f"P{n}", payer=c))
                pays.append(f"P{n}")
            elif op == "adj":
                led.apply(adjust(b, month=a, account=account, event_id=f"a{n}"))
            elif pays:
                led.apply(reverse(pays[a % len(pays)], account=account, event_id=f"r{n}"))
        except Rejected:
            pass
    plan = PlanSettings()
    everything = aging(led.accounts.values(), plan, as_of)
    balance = sum(m.balance_cents for acc in led.accounts.values() for m in acc.months.values() if m.month)
    assert everything.outstanding_cents + everything.credits_cents == everything.balance_cents == balance
    assert sum(everything.totals().values()) == everything.outstanding_cents
    for account_id, row in everything.by_account().items():
        assert row["balance"] == sum(m.balance_cents for m in led.accounts[account_id].months.values()
                                     if m.month and (m.bills or m.adjustments or m.balance_cents))
    for payer, row in everything.by_payer().items():
        one = aging(led.accounts.values(), plan, as_of, payer_id=payer)
        assert row["balance"] == one.balance_cents == one.outstanding_cents + one.credits_cents
        assert sum(one.totals().values()) + one.credits_cents == one.balance_cents


def test_the_aging_of_every_demo_agency_ties_to_its_statement_balance() -> None:
    from tests.unit.builders import NOW

    books = books_from(demo_archive(300, 12, 4), PlanSettings(), known_at=NOW)
    accounts = list(books.accounts.values())
    statements = {s.id: s for s in payer_statements(accounts, None, books.result.payer_cash())}
    agencies = sorted(p for p in statements if p.startswith("AG-"))
    assert len(agencies) >= 3
    outstanding = 0
    for agency in agencies:
        ages = aging(accounts, books.plan, books.as_of_day, issued_on=books.issued_on, payer_id=agency)
        assert ages.outstanding_cents + ages.credits_cents == ages.balance_cents == statements[agency].balance_cents
        outstanding += ages.outstanding_cents
    assert outstanding > 0
