"""``days.next_day_may_change``: the first business date that can change an account, exactly.

Replay skips, for an account, every ``day_closed`` before that date (replay/stream.py); that is only
right if ``day_may_change`` is false on every earlier date and true on it and after, and if folding an
earlier day leaves the account as it was.
"""

from __future__ import annotations

import copy
from datetime import date, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.codec import EventDecodeError, decode_input, encode
from events.types import RemittanceReceived
from processor.entrypoints.demo import generate
from processor.rules.base import Rejected
from processor.rules.days import day_may_change, next_day_may_change
from processor.rules.fold import fold_event
from processor.settings import FsaSettings, PlanSettings
from processor.state import AccountState, PartitionState, encode_state
from tests.unit.builders import T0, Ledger, bill, day, enroll, pay
from tests.unit.test_properties import programs


def _holds_from_its_date_on(account: AccountState, plan: PlanSettings, days: list[date]) -> None:
    first = next_day_may_change(account, plan)
    for d in days:
        assert day_may_change(account, d, plan) == (first is not None and d >= first), (account.account_id, d, first)


def _window(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def _fold_day(business_date: date, account: AccountState, plan: PlanSettings) -> list[str]:
    """The one fold of a day_closed over a partition holding only this account: the accounts it reached."""
    def only(_account_id: str) -> AccountState:
        return account

    reached = fold_event(day(business_date), PartitionState(partition=0), plan, only, lambda: [account])
    return [a.account_id for a, _ in reached]


def _demo_ledger_states(plan: PlanSettings) -> list[list[AccountState]]:
    """The demo program folded purely, phase by phase: copies of every account after each phase."""
    program = generate(members=30, months=4, seed=3)
    led = Ledger(plan=plan)
    seen: list[list[AccountState]] = []
    for _name, events in program.phases:
        for event in events:
            try:
                led.apply(decode_input(encode(event)))
            except Rejected:
                pass  # the program sends a few things the ledger refuses (the processor dead-letters them)
        seen.append([copy.deepcopy(a) for a in led.accounts.values()])
    return seen


def test_every_demo_account_may_change_on_its_first_date_and_every_date_after_and_on_none_before() -> None:
    plan = PlanSettings()
    days = _window(date(2025, 12, 1), date(2028, 6, 30))  # past every FSA run-out of the program
    states = _demo_ledger_states(plan)
    kinds = {"month": 0, "remittance": 0, "fsa": 0}
    for accounts in states[::3] + states[-1:]:
        for account in accounts:
            _holds_from_its_date_on(account, plan, days)
            kinds["month"] += bool(account.months)
            kinds["remittance"] += bool(account.remittances)
            kinds["fsa"] += account.fsa is not None
    assert all(kinds.values()), kinds  # the program has all three kinds of deadline


def test_the_first_date_follows_the_shortest_grace_period_and_the_fsa_run_out() -> None:
    plan = PlanSettings(grace_days=10, cobra_grace_days=30)
    led = Ledger(plan=plan)
    led.apply(enroll(), bill(10_000, due_on=date(2026, 1, 1)))
    assert next_day_may_change(led.account(), plan) == date(2026, 1, 12)  # due < d - 10 days
    led.apply(pay(10_000))
    assert next_day_may_change(led.account(), plan) is None  # paid: no day changes it
    fsa = PlanSettings(fsa=FsaSettings(run_out_days=90))
    _holds_from_its_date_on(led.account(), fsa, _window(date(2025, 12, 1), date(2026, 3, 1)))


def test_a_remittance_waiting_for_its_lines_may_change_its_payer_the_day_after_their_window() -> None:
    plan = PlanSettings(remittance_lines_days=5)
    led = Ledger(plan=plan)
    payer = "payer:AG-001"
    led.apply(RemittanceReceived(
        event_id="rem-1", account_id=payer, effective_on=date(2026, 2, 2), occurred_at=T0, remittance_id="R1",
        payer_id="AG-001", method="payroll", payment_date=date(2026, 2, 2), trace_number="TRN1",
        total_cents=20_000, lines_total_cents=20_000, line_count=2,
    ))
    account = led.account(payer)
    assert next_day_may_change(account, plan) == date(2026, 2, 8)  # d > 2 Feb + 5 days
    _holds_from_its_date_on(account, plan, _window(date(2026, 1, 1), date(2026, 4, 1)))
    led.apply(day(date(2026, 2, 8)))  # judged: no longer waiting
    assert next_day_may_change(led.account(payer), plan) is None


def test_a_day_before_the_first_date_leaves_the_account_as_it_was_and_the_first_date_reaches_it() -> None:
    plan = PlanSettings()
    for accounts in _demo_ledger_states(plan)[1::4]:
        for account in accounts:
            first = next_day_may_change(account, plan)
            if first is None:
                continue
            for d in (first - timedelta(days=1), first - timedelta(days=40)):
                mine = copy.deepcopy(account)
                before = encode_state(mine)
                assert _fold_day(d, mine, plan) == [] and encode_state(mine) == before
            assert _fold_day(first, copy.deepcopy(account), plan) == [account.account_id]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=programs(), probes=st.lists(st.dates(date(2025, 11, 1), date(2026, 12, 31)), max_size=12))
def test_on_random_books_the_first_date_is_exactly_where_day_may_change_turns_true(
    program: list, probes: list[date],
) -> None:
    plan = PlanSettings()
    led = Ledger(plan=plan)
    for event in program:
        try:
            led.apply(decode_input(encode(event)))
        except (Rejected, EventDecodeError):
            continue
        for account in led.accounts.values():
            first = next_day_may_change(account, plan)
            near = [] if first is None else [first - timedelta(days=1), first, first + timedelta(days=1)]
            _holds_from_its_date_on(account, plan, probes + near)
