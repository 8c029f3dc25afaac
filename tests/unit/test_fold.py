"""The pure fold: each discrepancy kind to the cent, actor and causes; corrections; rejections."""

from __future__ import annotations

from datetime import date

import pytest

from events.types import DiscrepancyOpened, DiscrepancyResolved
from processor.rules.base import Rejected, discrepancy_id
from processor.rules.days import months_to_check
from processor.rules.pricing import expected_premium
from processor.settings import PlanSettings
from processor.state import (
    PAYMENT_AFTER_TERM,
    PAYMENT_APPLIED,
    PAYMENT_DUPLICATE,
    PAYMENT_HELD,
    PAYMENT_REVERSED,
)
from tests.unit.builders import (
    ACCOUNT,
    AGENCY,
    APR,
    DENTAL,
    FEB,
    HEALTH,
    JAN,
    JUL,
    JUN,
    MAR,
    Ledger,
    adjust,
    bill,
    day,
    enroll,
    pay,
    rate,
    reverse,
)

UMP_EMP = 78_412
UMP_FAM = 211_963
DELTA_EMP = 6_450
JAN_KEY, FEB_KEY, MAR_KEY = "2026-01-01", "2026-02-01", "2026-03-01"


def enrolled(**kwargs: object) -> Ledger:
    led = Ledger(**kwargs)  # type: ignore[arg-type]
    led.apply(enroll(event_id="enr-add"))
    return led


def payment(led: Ledger, payment_id: str, month: str = JAN_KEY):
    return next(p for p in led.account().months[month].payments if p.payment_id == payment_id)


# -- underpaid / overpaid -------------------------------------------------------------------------


def test_underpaid_opens_with_net_billed_expected_and_paid_actual_for_the_agency_coordinator() -> None:
    led = enrolled()
    b, p = bill(UMP_EMP, event_id="bill-1"), pay(70_000, event_id="pay-1", payment_id="P1")
    led.apply(b, p)
    d = led.one_open("underpaid")
    assert (d.expected_cents, d.actual_cents) == (78_412, 70_000)
    assert d.actor == "agency_coordinator"
    assert d.cause_event_ids == ("bill-1", "pay-1")
    assert (d.coverage_month, d.payer_id, d.opened_by) == (JAN, AGENCY, "pay-1")
    assert "$84.12 short" in d.explanation
    [ev] = led.opened("underpaid")
    assert ev.event_id == f"{d.discrepancy_id}:opened"
    assert (ev.expected_cents, ev.actual_cents, ev.causation_id) == (78_412, 70_000, "pay-1")
    assert ev.account_id == ACCOUNT and ev.coverage_month == JAN


def test_underpaid_by_a_direct_paying_member_names_the_member_as_actor() -> None:
    led = enrolled()
    led.apply(bill(UMP_EMP, agency=None), pay(50_000, method="direct", payer=ACCOUNT))
    d = led.one_open("underpaid")
    assert (d.expected_cents, d.actual_cents, d.actor, d.payer_id) == (78_412, 50_000, "member", ACCOUNT)


def test_underpaid_counts_adjustments_in_the_expected_amount() -> None:
    led = enrolled()
    led.apply(bill(UMP_EMP), adjust(-8_412), pay(60_000))
    d = led.one_open("underpaid")
    assert (d.expected_cents, d.actual_cents) == (70_000, 60_000)


def test_an_adjustment_that_explains_the_short_payment_resolves_underpaid() -> None:
    led = enrolled()
    led.apply(bill(UMP_EMP), pay(70_000))
    led.apply(adj := adjust(-8_412, event_id="adj-1"))
    assert led.open("underpaid") == []
    [res] = led.resolved("underpaid")
    assert res.resolving_event_ids == (adj.event_id,)


@pytest.mark.parametrize("gap", [1, 99, 100])
def test_a_payment_short_by_no_more_than_the_tolerance_opens_nothing(gap: int) -> None:
    led = enrolled()
    led.apply(bill(UMP_EMP), pay(UMP_EMP - gap))
    assert led.open() == [] and led.emitted == []


def test_a_payment_short_by_one_cent_more_than_the_tolerance_is_underpaid() -> None:
    led = enrolled()
    led.apply(bill(UMP_EMP), pay(UMP_EMP - 101))
    d = led.one_open("underpaid")
    assert (d.expected_cents, d.actual_cents) == (78_412, 78_311)


@pytest.mark.parametrize("over", [1, 100])
def test_a_payment_over_by_no_more_than_the_tolerance_opens_nothing(over: int) -> None:
    led = enrolled()
    led.apply(bill(UMP_EMP), pay(UMP_EMP + over))
    assert led.open() == []


def test_overpaid_opens_only_beyond_the_tolerance_with_billed_expected_and_paid_actual() -> None:
    led = enrolled()
    b, p = bill(UMP_EMP, event_id="bill-o"), pay(UMP_EMP + 101, event_id="pay-o")
    led.apply(b, p)
    d = led.one_open("overpaid")
    assert (d.expected_cents, d.actual_cents) == (78_412, 78_513)
    assert d.actor == "agency_coordinator"
    assert d.cause_event_ids == ("bill-o", "pay-o")
    assert "$1.01 over" in d.explanation


def test_a_zero_tolerance_plan_flags_a_one_cent_gap() -> None:
    led = enrolled(plan=PlanSettings(tolerance_cents=0))
    led.apply(bill(UMP_EMP), pay(UMP_EMP + 1))
    d = led.one_open("overpaid")
    assert (d.expected_cents, d.actual_cents) == (78_412, 78_413)


def test_a_second_partial_payment_updates_the_open_underpaid_in_place() -> None:
    led = enrolled()
    led.apply(bill(UMP_EMP, event_id="b"), pay(30_000, event_id="p1"))
    first = led.one_open("underpaid")
    outs = led.apply(pay(20_000, event_id="p2"))
    d = led.one_open("underpaid")
    assert d.discrepancy_id == first.discrepancy_id
    assert (d.expected_cents, d.actual_cents) == (78_412, 50_000)
    assert d.cause_event_ids == ("b", "p1", "p2")
    assert outs[0].changed_discrepancies == [d]
    # subscribers hear of it: one amount-changed event, no new opening
    assert [e.event_id for e in outs[0].emitted] == [f"{d.discrepancy_id}:changed:p2"]


def test_the_payment_that_completes_the_month_resolves_underpaid() -> None:
    led = enrolled()
    led.apply(bill(UMP_EMP), pay(70_000))
    d = led.one_open("underpaid")
    led.apply(pay(8_412, event_id="top-up"))
    assert led.open() == []
    [res] = led.resolved()
    assert (res.discrepancy_id, res.kind) == (d.discrepancy_id, "underpaid")
    assert res.resolving_event_ids == ("top-up",)
    assert res.event_id == f"{d.discrepancy_id}:resolved" and res.causation_id == "top-up"
    assert led.account().months[JAN_KEY].balance_cents == 0


def test_paying_a_month_whose_bill_was_credited_to_zero_is_overpaid() -> None:
    led = enrolled()
    led.apply(bill(UMP_EMP), pay(UMP_EMP), adjust(-UMP_EMP, plan=HEALTH))
    d = led.one_open("overpaid")
    assert (d.expected_cents, d.actual_cents) == (0, 78_412)


# -- billed, not enrolled -------------------------------------------------------------------------


def test_billed_not_enrolled_is_one_finding_per_month_listing_every_unenrolled_plan() -> None:
    led = Ledger()
    b1 = bill(UMP_EMP, event_id="bill-h", plan=HEALTH)
    b2 = bill(DELTA_EMP, event_id="bill-d", plan=DENTAL)
    led.apply(b1, b2)
    d = led.one_open("billed_not_enrolled")
    assert (d.expected_cents, d.actual_cents) == (0, 84_862)
    assert d.actor == "billing"
    assert d.cause_event_ids == ("bill-h", "bill-d")
    assert HEALTH in d.explanation and DENTAL in d.explanation and "$848.62" in d.explanation
    assert d.coverage_month == JAN and d.payer_id == AGENCY
    # opened by the first bill, grown in place by the second
    assert d.discrepancy_id == discrepancy_id(ACCOUNT, f"billed_not_enrolled|{JAN_KEY}", "bill-h")
    assert len(led.opened("billed_not_enrolled")) == 1


def test_billed_not_enrolled_covers_only_the_plan_without_coverage() -> None:
    led = enrolled()
    led.apply(bill(UMP_EMP, plan=HEALTH), bill(DELTA_EMP, plan=DENTAL, event_id="bill-d"))
    d = led.one_open("billed_not_enrolled")
    assert (d.expected_cents, d.actual_cents) == (0, 6_450)
    assert DENTAL in d.explanation and HEALTH not in d.explanation


def test_billed_not_enrolled_are_separate_findings_for_separate_months() -> None:
    led = Ledger()
    led.apply(bill(UMP_EMP, month=JAN), bill(UMP_EMP, month=FEB))
    assert sorted(d.coverage_month for d in led.open("billed_not_enrolled")) == [JAN, FEB]


def test_billing_after_a_termination_is_billed_not_enrolled_naming_the_end_date() -> None:
    led = enrolled()
    led.apply(enroll(event_id="enr-term", action="terminate", begin=JAN, end=date(2026, 1, 31)))
    led.apply(bill(UMP_EMP, month=FEB, event_id="bill-feb"))
    d = led.one_open("billed_not_enrolled")
    assert (d.expected_cents, d.actual_cents, d.coverage_month) == (0, 78_412, FEB)
    assert "coverage ended 2026-01-31" in d.explanation
    assert d.cause_event_ids[0] == "bill-feb"


def test_billed_not_enrolled_after_a_termination_names_the_termination_event() -> None:
    led = enrolled()
    led.apply(enroll(event_id="enr-term", action="terminate", begin=JAN, end=date(2026, 1, 31)))
    led.apply(bill(UMP_EMP, month=FEB, event_id="bill-feb"))
    assert "enr-term" in led.one_open("billed_not_enrolled").cause_event_ids


def test_crediting_the_unenrolled_bill_back_to_zero_resolves_billed_not_enrolled() -> None:
    led = Ledger()
    led.apply(bill(UMP_EMP, plan=HEALTH))
    led.apply(adjust(-UMP_EMP, plan=HEALTH, event_id="credit"))
    assert led.open() == []
    assert led.resolved("billed_not_enrolled")[0].resolving_event_ids == ("credit",)


def test_a_late_enrollment_resolves_billed_not_enrolled() -> None:
    led = Ledger()
    led.apply(bill(UMP_EMP))
    led.apply(enroll(event_id="late-add"))
    assert led.open() == []
    assert led.resolved("billed_not_enrolled")[0].resolving_event_ids == ("late-add",)


# -- wrong rate -----------------------------------------------------------------------------------


def test_wrong_rate_uses_the_rate_of_the_members_plan_and_tier() -> None:
    led = Ledger()
    r_emp = rate(UMP_EMP, event_id="rate-emp", tier="EMP")
    r_fam = rate(UMP_FAM, event_id="rate-fam", tier="FAM")
    led.apply(r_emp, r_fam, enroll(event_id="enr-fam", tier="FAM"))
    led.apply(bill(UMP_EMP, tier="EMP", event_id="bill-emp"))  # billed at the EMP rate
    d = led.one_open("wrong_rate")
    assert (d.expected_cents, d.actual_cents) == (211_963, 78_412)
    assert d.actor == "billing"
    assert d.cause_event_ids == ("bill-emp", "enr-fam", "rate-fam")
    assert "FAM" in d.explanation and "$2,119.63" in d.explanation


def test_a_bill_at_the_rate_in_force_opens_nothing() -> None:
    led = Ledger()
    led.apply(rate(UMP_EMP), enroll(), bill(UMP_EMP))
    assert led.open() == []
    assert led.account().months[JAN_KEY].expected_cents == 78_412


def test_the_latest_rate_publication_wins_for_the_same_month() -> None:
    led = Ledger()
    led.apply(rate(UMP_EMP, event_id="rate-v1"), rate(79_000, event_id="rate-v2"), enroll())
    led.apply(bill(79_000, month=JAN))
    assert led.open() == []
    led.apply(bill(UMP_EMP, month=FEB, event_id="bill-old-rate"))
    d = led.one_open("wrong_rate")
    assert (d.expected_cents, d.actual_cents, d.coverage_month) == (79_000, 78_412, FEB)
    assert "rate-v2" in d.cause_event_ids and "rate-v1" not in d.cause_event_ids


def test_a_rate_change_between_months_prices_each_month_at_its_own_rate() -> None:
    led = Ledger()
    renewed = UMP_EMP * 106 // 100  # 83_116
    led.apply(
        rate(UMP_EMP, event_id="rate-h1", month_through=date(2026, 6, 30)),
        rate(renewed, event_id="rate-h2", month_from=JUL),
        enroll(event_id="enr-1"),
    )
    led.apply(bill(UMP_EMP, month=JUN), bill(renewed, month=JUL))
    assert led.open() == []
    led.apply(bill(UMP_EMP, month=date(2026, 8, 1), event_id="bill-aug-stale"))
    d = led.one_open("wrong_rate")
    assert (d.expected_cents, d.actual_cents) == (83_116, 78_412)
    assert d.cause_event_ids == ("bill-aug-stale", "enr-1", "rate-h2")
    assert led.account().months["2026-06-01"].expected_cents == 78_412
    assert led.account().months["2026-07-01"].expected_cents == 83_116


def test_wrong_rate_follows_a_tier_change_month_by_month() -> None:
    led = Ledger()
    led.apply(rate(UMP_EMP, tier="EMP"), rate(UMP_FAM, tier="FAM"), enroll(tier="EMP"))
    led.apply(enroll(action="change", tier="FAM", begin=MAR, event_id="enr-chg"))
    led.apply(bill(UMP_EMP, month=FEB), bill(UMP_FAM, month=MAR, tier="FAM"))
    assert led.open() == []
    led.apply(bill(UMP_EMP, month=APR, event_id="bill-apr"))  # billing missed the tier change
    d = led.one_open("wrong_rate")
    assert (d.expected_cents, d.actual_cents, d.coverage_month) == (211_963, 78_412, APR)
    assert "enr-chg" in d.cause_event_ids


def test_an_adjustment_for_the_plan_that_corrects_the_bill_resolves_wrong_rate() -> None:
    led = Ledger()
    led.apply(rate(UMP_EMP), enroll(), bill(80_000))
    assert led.one_open("wrong_rate").actual_cents == 80_000
    led.apply(adjust(-1_588, plan=HEALTH, event_id="fix"))
    assert led.open() == []
    assert led.resolved("wrong_rate")[0].resolving_event_ids == ("fix",)


def test_a_retroactive_tier_change_into_billed_months_is_a_retroactive_change_not_wrong_rate() -> None:
    led = Ledger()
    led.apply(rate(UMP_EMP, tier="EMP"), rate(UMP_FAM, tier="FAM"), enroll(tier="EMP"))
    led.apply(bill(UMP_EMP, month=FEB))
    assert led.open() == []
    led.apply(enroll(action="change", tier="FAM", begin=FEB, event_id="retro-chg"))
    assert led.open("wrong_rate") == []
    d = led.one_open("retroactive_change")
    assert (d.expected_cents, d.actual_cents, d.opened_by) == (211_963, 78_412, "retro-chg")
    assert "retro-chg" in d.cause_event_ids and d.actor == "billing"
    assert "bill $1,335.51" in d.action


def test_no_wrong_rate_is_judged_without_a_published_rate() -> None:
    led = enrolled()
    led.apply(bill(12_345))
    assert led.open() == []
    assert led.account().months[JAN_KEY].expected_cents is None


def test_expected_premium_sums_subscriber_lines_and_ignores_dependents() -> None:
    led = Ledger()
    led.apply(rate(UMP_FAM, tier="FAM"), rate(18_705, plan=DENTAL, tier="FAM"))
    led.apply(enroll(tier="FAM"), enroll(plan=DENTAL, line="dental", tier="FAM"))
    led.apply(enroll(member=f"{ACCOUNT}-D1", relationship="spouse", tier="FAM"))
    assert expected_premium(led.account(), led.part, JAN, led.plan) == 230_668


# -- unmatched payment ----------------------------------------------------------------------------


def test_a_payment_for_an_unknown_account_is_unmatched_cash_held_for_the_payer() -> None:
    led = Ledger()
    p = pay(12_345, account="X-UNKNOWN", event_id="pay-x", payment_id="PX", payer="AG-007")
    [out] = led.apply(p)
    [d] = led.open("unmatched_payment", account_id="X-UNKNOWN")
    assert (d.expected_cents, d.actual_cents) == (0, 12_345)
    assert d.actor == "accounts_staff" and d.payer_id == "AG-007"
    assert d.cause_event_ids == ("pay-x",)
    assert out.payer_unapplied_delta == {"AG-007": 12_345}
    assert led.accounts["X-UNKNOWN"].months[JAN_KEY].unapplied_cents == 12_345
    assert led.accounts["X-UNKNOWN"].months[JAN_KEY].paid_cents == 0


def test_a_payment_naming_no_coverage_month_is_unmatched() -> None:
    led = enrolled()
    [out] = led.apply(pay(5_000, month=None, payment_id="P-nomonth", event_id="pay-nm"))
    d = led.one_open("unmatched_payment")
    assert (d.expected_cents, d.actual_cents, d.coverage_month) == (0, 5_000, None)
    assert "names no coverage month" in d.explanation
    assert out.payer_unapplied_delta == {AGENCY: 5_000}
    assert payment(led, "P-nomonth", "-").status == PAYMENT_HELD


def test_a_payment_for_a_month_never_billed_is_unmatched() -> None:
    led = enrolled()
    led.apply(pay(UMP_EMP, month=MAR, payment_id="P-mar"))
    d = led.one_open("unmatched_payment")
    assert (d.expected_cents, d.actual_cents, d.coverage_month) == (0, 78_412, MAR)
    assert "never billed" in d.explanation
    assert payment(led, "P-mar", MAR_KEY).status == PAYMENT_HELD


def test_cash_held_for_an_unbilled_month_is_applied_when_the_bill_arrives() -> None:
    led = enrolled()
    led.apply(pay(UMP_EMP, month=MAR, payment_id="P-mar"))
    d = led.one_open("unmatched_payment")
    [out] = led.apply(b := bill(UMP_EMP, month=MAR, event_id="bill-mar"))
    assert out.payer_unapplied_delta == {AGENCY: -78_412}
    assert led.unapplied == {AGENCY: 0}
    assert led.open() == []
    [res] = led.resolved("unmatched_payment")
    assert (res.discrepancy_id, res.resolving_event_ids) == (d.discrepancy_id, (b.event_id,))
    month = led.account().months[MAR_KEY]
    assert (month.paid_cents, month.unapplied_cents, month.balance_cents) == (78_412, 0, 0)
    assert payment(led, "P-mar", MAR_KEY).status == PAYMENT_APPLIED


def test_held_cash_applied_to_a_larger_bill_turns_into_underpaid() -> None:
    led = enrolled()
    led.apply(pay(70_000, month=MAR))
    led.apply(bill(UMP_EMP, month=MAR, event_id="bill-mar"))
    d = led.one_open("underpaid")
    assert (d.expected_cents, d.actual_cents, d.opened_by) == (78_412, 70_000, "bill-mar")


# -- paid after termination -----------------------------------------------------------------------


def test_a_payment_for_a_month_after_termination_is_paid_after_termination() -> None:
    led = enrolled()
    led.apply(enroll(action="terminate", begin=JAN, end=date(2026, 1, 31), event_id="enr-term"))
    [out] = led.apply(p := pay(UMP_EMP, month=FEB, payment_id="P-feb", event_id="pay-feb"))
    d = led.one_open("paid_after_termination")
    assert (d.expected_cents, d.actual_cents, d.coverage_month) == (0, 78_412, FEB)
    assert d.actor == "accounts_staff" and d.payer_id == AGENCY
    assert d.cause_event_ids[0] == p.event_id
    assert "after coverage ended on 2026-01-31" in d.explanation
    assert d.action == f"refund $784.12 to {AGENCY}"
    assert out.payer_unapplied_delta == {AGENCY: 78_412}
    assert payment(led, "P-feb", FEB_KEY).status == PAYMENT_AFTER_TERM
    assert led.open("unmatched_payment") == []


def test_a_payment_for_the_last_covered_month_is_not_after_termination() -> None:
    led = enrolled()
    led.apply(enroll(action="terminate", begin=JAN, end=date(2026, 2, 15)))
    led.apply(pay(UMP_EMP, month=FEB))
    assert led.open("paid_after_termination") == []
    assert led.one_open("unmatched_payment").coverage_month == FEB


def test_reversing_a_payment_made_after_termination_resolves_it_and_releases_the_cash() -> None:
    led = enrolled()
    led.apply(enroll(action="terminate", begin=JAN, end=date(2026, 1, 31)))
    led.apply(pay(UMP_EMP, month=FEB, payment_id="P-feb"))
    [out] = led.apply(reverse("P-feb", event_id="rev-feb"))
    assert out.payer_unapplied_delta == {AGENCY: -78_412}
    assert led.unapplied == {AGENCY: 0}
    assert led.open() == []
    assert led.resolved("paid_after_termination")[0].resolving_event_ids == ("rev-feb",)


def test_a_reinstatement_turns_a_payment_after_termination_into_a_payment_for_the_month() -> None:
    led = enrolled()
    led.apply(enroll(action="terminate", begin=JAN, end=date(2026, 1, 31)))
    led.apply(pay(UMP_EMP, month=FEB, payment_id="P-feb"))
    led.apply(enroll(action="reinstate", begin=FEB), bill(UMP_EMP, month=FEB))
    led.apply(day(date(2026, 4, 1)))
    assert led.open() == []
    assert led.account().months[FEB_KEY].paid_cents == 78_412
    assert led.unapplied == {AGENCY: 0}


# -- duplicate payment ----------------------------------------------------------------------------


def test_same_trace_account_and_month_under_another_payment_id_is_a_duplicate_not_counted_as_paid() -> None:
    led = enrolled()
    led.apply(bill(UMP_EMP))
    led.apply(pay(UMP_EMP, payment_id="P1", trace="TRN-1", event_id="pay-1"))
    [out] = led.apply(pay(UMP_EMP, payment_id="P1-resent", trace="TRN-1", event_id="pay-2"))
    d = led.one_open("duplicate_payment")
    assert (d.expected_cents, d.actual_cents, d.coverage_month) == (0, 78_412, JAN)
    assert d.actor == "accounts_staff"
    assert d.cause_event_ids == ("pay-2",)
    assert "repeats trace TRN-1 of payment P1" in d.explanation
    month = led.account().months[JAN_KEY]
    assert (month.paid_cents, month.unapplied_cents, month.balance_cents) == (78_412, 78_412, 0)
    assert out.payer_unapplied_delta == {AGENCY: 78_412}
    assert led.open("overpaid") == []
    line = payment(led, "P1-resent")
    assert (line.status, line.duplicate_of) == (PAYMENT_DUPLICATE, "P1")


def test_the_same_trace_for_another_month_is_not_a_duplicate() -> None:
    led = enrolled()
    led.apply(bill(UMP_EMP, month=JAN), bill(UMP_EMP, month=FEB))
    led.apply(pay(UMP_EMP, month=JAN, trace="TRN-1"), pay(UMP_EMP, month=FEB, trace="TRN-1"))
    assert led.open() == []


def test_the_same_trace_on_another_account_is_not_a_duplicate() -> None:
    led = Ledger()
    for acc in ("M1", "M2"):
        led.apply(enroll(account=acc), bill(UMP_EMP, account=acc), pay(UMP_EMP, account=acc, trace="TRN-1"))
    assert led.open(account_id="M1") == [] and led.open(account_id="M2") == []


def test_a_reused_trace_after_the_first_payment_was_reversed_is_not_a_duplicate() -> None:
    led = enrolled()
    led.apply(bill(UMP_EMP), pay(UMP_EMP, payment_id="P1", trace="TRN-1"), reverse("P1"))
    led.apply(pay(UMP_EMP, payment_id="P2", trace="TRN-1"))
    assert led.open() == []
    assert payment(led, "P2").status == PAYMENT_APPLIED


# -- missing payment ------------------------------------------------------------------------------


@pytest.mark.parametrize(("business_date", "missing"), [
    (date(2026, 1, 30), False),  # the day before the deadline
    (date(2026, 1, 31), False),  # the deadline itself: due Jan 1 + 30 grace days
    (date(2026, 2, 1), True),    # the day after
])
def test_missing_payment_is_decided_by_day_closed_only_after_due_plus_grace(
    business_date: date, missing: bool
) -> None:
    led = enrolled()
    led.apply(bill(UMP_EMP, event_id="bill-1"))
    assert led.open() == []
    assert bool(months_to_check(led.account(), business_date, led.plan)) is missing
    led.apply(day(business_date, event_id="day-1"))
    assert bool(led.open("missing_payment")) is missing
    # once it is open the month is no longer a candidate: DayClosed only re-checks what it can change
    assert months_to_check(led.account(), business_date, led.plan) == []
    if missing:
        d = led.one_open("missing_payment")
        assert (d.expected_cents, d.actual_cents, d.coverage_month) == (78_412, 0, JAN)
        assert d.actor == "agency_coordinator" and d.payer_id == AGENCY
        assert d.cause_event_ids == ("bill-1", "day-1")
        assert d.opened_by == "day-1"


def test_missing_payment_honours_the_plan_grace_days_and_the_due_date() -> None:
    led = enrolled(plan=PlanSettings(grace_days=10))
    led.apply(bill(UMP_EMP, due_on=date(2026, 1, 15)))
    led.apply(day(date(2026, 1, 25)))
    assert led.open() == []
    led.apply(day(date(2026, 1, 26)))
    assert led.one_open("missing_payment").expected_cents == 78_412


def test_a_direct_billed_missing_payment_names_the_member() -> None:
    led = enrolled()
    led.apply(bill(UMP_EMP, agency=None), day(date(2026, 2, 1)))
    d = led.one_open("missing_payment")
    assert (d.actor, d.payer_id) == ("member", None)


def test_no_day_closed_means_no_missing_payment_however_late_the_bill() -> None:
    led = enrolled()
    led.apply(bill(UMP_EMP, month=JAN), bill(UMP_EMP, month=FEB), adjust(100, month=JAN))
    assert led.open("missing_payment") == []


def test_a_later_payment_resolves_missing_payment() -> None:
    led = enrolled()
    led.apply(bill(UMP_EMP), day(date(2026, 2, 1)))
    d = led.one_open("missing_payment")
    led.apply(pay(UMP_EMP, event_id="late-pay"))
    assert led.open() == []
    [res] = led.resolved("missing_payment")
    assert (res.discrepancy_id, res.resolving_event_ids) == (d.discrepancy_id, ("late-pay",))


def test_a_late_partial_payment_turns_missing_into_underpaid() -> None:
    led = enrolled()
    led.apply(bill(UMP_EMP), day(date(2026, 2, 1)))
    led.apply(pay(40_000))
    assert led.open("missing_payment") == []
    d = led.one_open("underpaid")
    assert (d.expected_cents, d.actual_cents) == (78_412, 40_000)


def test_a_bill_credited_to_within_the_tolerance_is_never_missing() -> None:
    led = enrolled()
    led.apply(bill(UMP_EMP), adjust(-UMP_EMP + 100), day(date(2026, 3, 1)))
    assert led.open() == []


def test_closing_the_same_day_again_changes_nothing() -> None:
    led = enrolled()
    led.apply(bill(UMP_EMP), day(date(2026, 2, 1)))
    outs = led.apply(day(date(2026, 2, 1)))
    assert all(o.emitted == [] for o in outs)
    assert len(led.open("missing_payment")) == 1


def test_a_day_closed_going_back_in_time_is_rejected_and_leaves_the_business_date() -> None:
    led = enrolled()
    led.apply(day(date(2026, 2, 1), event_id="day-feb"))
    with pytest.raises(Rejected) as info:
        led.apply(day(date(2026, 1, 31)))
    assert info.value.field == "business_date"
    assert (led.part.business_date, led.part.business_date_event_id) == (date(2026, 2, 1), "day-feb")


# -- ids, re-opening, reversals, rejections -------------------------------------------------------


def _everything() -> list:
    return [
        rate(UMP_EMP, event_id="r1"), enroll(event_id="e1"),
        bill(UMP_EMP, event_id="b1", bill_id="B1"), pay(70_000, event_id="p1", payment_id="P1"),
        bill(80_000, month=FEB, event_id="b2", bill_id="B2"),
        pay(1_000, month=MAR, event_id="p2", payment_id="P2"),
        pay(5_000, account="X1", event_id="p3", payment_id="P3"),
        day(date(2026, 4, 1), event_id="d1"),
        pay(8_412, event_id="p4", payment_id="P4"),
    ]


def test_discrepancy_ids_are_deterministic_for_the_same_events_in_a_fresh_state() -> None:
    first, second = Ledger(), Ledger()
    first.apply(*_everything())
    second.apply(*_everything())
    ids = [(e.event_id, e.kind) for e in first.emitted]
    assert ids == [(e.event_id, e.kind) for e in second.emitted]
    assert {k for _, k in ids} >= {"underpaid", "wrong_rate", "unmatched_payment", "missing_payment"}
    assert first.emitted == second.emitted


def test_a_discrepancy_reopened_after_resolution_gets_a_new_id() -> None:
    led = enrolled()
    led.apply(bill(UMP_EMP), pay(60_000, payment_id="P1"))
    first = led.one_open("underpaid")
    led.apply(pay(18_412, payment_id="P2"))
    assert led.open() == []
    led.apply(reverse("P2", event_id="rev-2"))
    again = led.one_open("underpaid")
    assert again.discrepancy_id != first.discrepancy_id
    assert (again.expected_cents, again.actual_cents, again.opened_by) == (78_412, 60_000, "rev-2")
    assert [e.discrepancy_id for e in led.opened("underpaid")] == [first.discrepancy_id, again.discrepancy_id]


def test_reversing_an_applied_payment_reopens_missing_payment() -> None:
    led = enrolled()
    led.apply(bill(UMP_EMP, event_id="bill-1"), day(date(2026, 2, 1), event_id="day-1"))
    first = led.one_open("missing_payment")
    led.apply(pay(UMP_EMP, payment_id="P1"))
    assert led.open() == []
    [out] = led.apply(reverse("P1", event_id="rev-1"))
    again = led.one_open("missing_payment")
    assert again.discrepancy_id != first.discrepancy_id
    assert (again.expected_cents, again.actual_cents) == (78_412, 0)
    assert again.cause_event_ids == ("bill-1", "day-1", "rev-1")
    assert out.payer_unapplied_delta == {}  # applied cash was never unapplied
    month = led.account().months[JAN_KEY]
    assert (month.paid_cents, month.balance_cents) == (0, 78_412)
    assert payment(led, "P1").status == PAYMENT_REVERSED
    assert payment(led, "P1").reversal_event_id == "rev-1"


def test_reversing_held_cash_resolves_unmatched_and_takes_the_cash_off_the_payer() -> None:
    led = Ledger()
    led.apply(pay(5_000, account="X1", payment_id="PX", payer="AG-009"))
    [out] = led.apply(reverse("PX", account="X1"))
    assert out.payer_unapplied_delta == {"AG-009": -5_000}
    assert led.open(account_id="X1") == []


def test_reversing_an_unknown_payment_is_rejected_and_leaves_the_state_unchanged() -> None:
    led = enrolled()
    led.apply(bill(UMP_EMP), pay(70_000, payment_id="P1"))
    before = led.snapshot()
    with pytest.raises(Rejected) as info:
        led.apply(reverse("P-nope"))
    assert info.value.field == "payment_id" and "P-nope" in info.value.reason
    assert led.snapshot() == before


def test_reversing_a_payment_twice_is_rejected_and_leaves_the_state_unchanged() -> None:
    led = enrolled()
    led.apply(bill(UMP_EMP), pay(UMP_EMP, payment_id="P1"), reverse("P1", event_id="rev-a"))
    before = led.snapshot()
    with pytest.raises(Rejected, match="already reversed by rev-a"):
        led.apply(reverse("P1", event_id="rev-b"))
    assert led.snapshot() == before


def test_a_duplicate_bill_id_under_another_event_id_is_rejected_without_mutating_state() -> None:
    led = enrolled()
    led.apply(bill(UMP_EMP, bill_id="B-1", event_id="bill-a"))
    before = led.snapshot()
    with pytest.raises(Rejected) as info:
        led.apply(bill(UMP_EMP, bill_id="B-1", event_id="bill-b", month=FEB))
    assert info.value.field == "bill_id"
    assert led.snapshot() == before
    assert FEB_KEY not in led.account().months


def test_a_duplicate_payment_id_under_another_event_id_is_rejected_without_mutating_state() -> None:
    led = enrolled()
    led.apply(bill(UMP_EMP), pay(UMP_EMP, payment_id="P1", event_id="pay-a"))
    before = led.snapshot()
    with pytest.raises(Rejected) as info:
        led.apply(pay(UMP_EMP, payment_id="P1", event_id="pay-b", month=FEB))
    assert info.value.field == "payment_id"
    assert led.snapshot() == before


def test_a_duplicate_adjustment_id_is_rejected_without_mutating_state() -> None:
    led = enrolled()
    led.apply(bill(UMP_EMP), adjust(-100, adjustment_id="A1"))
    before = led.snapshot()
    with pytest.raises(Rejected) as info:
        led.apply(adjust(-100, adjustment_id="A1", month=FEB))
    assert info.value.field == "adjustment_id"
    assert led.snapshot() == before


# -- enrollment changes ---------------------------------------------------------------------------


def _segments(led: Ledger) -> list[tuple[str, str, date, date | None]]:
    return [(s.plan, s.tier, s.begin, s.end) for s in led.account().coverages]


def test_a_mid_year_change_splits_coverage_into_the_tier_before_and_after() -> None:
    led = enrolled()
    led.apply(enroll(action="change", tier="FAM", begin=APR, event_id="enr-chg"))
    assert _segments(led) == [(HEALTH, "EMP", JAN, date(2026, 3, 31)), (HEALTH, "FAM", APR, None)]
    assert [s.event_id for s in led.account().coverages] == ["enr-add", "enr-chg"]


def test_a_change_on_the_segments_first_day_replaces_it() -> None:
    led = enrolled()
    led.apply(enroll(action="change", tier="ESP", begin=JAN))
    assert _segments(led) == [(HEALTH, "ESP", JAN, None)]


def test_a_change_keeps_the_end_of_the_segment_it_splits() -> None:
    led = Ledger()
    led.apply(enroll(end=date(2026, 12, 31)), enroll(action="change", tier="FAM", begin=JUL))
    assert _segments(led) == [
        (HEALTH, "EMP", JAN, date(2026, 6, 30)),
        (HEALTH, "FAM", JUL, date(2026, 12, 31)),
    ]


def test_terminate_ends_coverage_and_drops_segments_that_start_after_the_end() -> None:
    led = enrolled()
    led.apply(enroll(action="change", tier="FAM", begin=JUL))
    led.apply(enroll(action="terminate", begin=JAN, end=date(2026, 5, 31)))
    assert _segments(led) == [(HEALTH, "EMP", JAN, date(2026, 5, 31))]


def test_terminate_affects_only_that_member_and_line() -> None:
    led = enrolled()
    led.apply(enroll(plan=DENTAL, line="dental"), enroll(member="DEP-1", relationship="child"))
    led.apply(enroll(action="terminate", plan=DENTAL, line="dental", begin=JAN, end=date(2026, 2, 28)))
    ends = {(s.member_id, s.coverage_line): s.end for s in led.account().coverages}
    assert ends == {
        (ACCOUNT, "health"): None, (ACCOUNT, "dental"): date(2026, 2, 28), ("DEP-1", "health"): None,
    }


def test_reinstate_right_after_the_end_continues_the_coverage() -> None:
    led = enrolled()
    led.apply(enroll(action="terminate", begin=JAN, end=date(2026, 2, 28)))
    led.apply(enroll(action="reinstate", begin=MAR))
    assert _segments(led) == [(HEALTH, "EMP", JAN, None)]


def test_reinstate_after_a_gap_opens_a_new_segment() -> None:
    led = enrolled()
    led.apply(enroll(action="terminate", begin=JAN, end=date(2026, 2, 28)))
    led.apply(enroll(action="reinstate", begin=JUN, tier="ESP"))
    assert _segments(led) == [(HEALTH, "EMP", JAN, date(2026, 2, 28)), (HEALTH, "ESP", JUN, None)]


def test_tier_before_and_after_a_change_drive_expected_premium_per_month() -> None:
    led = Ledger()
    led.apply(rate(UMP_EMP, tier="EMP"), rate(UMP_FAM, tier="FAM"), enroll(tier="EMP"))
    led.apply(enroll(action="change", tier="FAM", begin=APR))
    assert expected_premium(led.account(), led.part, MAR, led.plan) == 78_412
    assert expected_premium(led.account(), led.part, APR, led.plan) == 211_963


def test_a_retroactive_termination_makes_already_billed_months_billed_not_enrolled() -> None:
    led = enrolled()
    led.apply(bill(UMP_EMP, month=JAN), bill(UMP_EMP, month=FEB), bill(UMP_EMP, month=MAR))
    assert led.open() == []
    led.apply(enroll(action="terminate", begin=JAN, end=date(2026, 1, 31), event_id="retro-term"))
    found = sorted((d.coverage_month, d.actual_cents, d.opened_by) for d in led.open("billed_not_enrolled"))
    assert found == [(FEB, 78_412, "retro-term"), (MAR, 78_412, "retro-term")]


def test_emitted_events_are_typed_discrepancy_events() -> None:
    led = Ledger()
    led.apply(*_everything())
    assert led.emitted and all(isinstance(e, DiscrepancyOpened | DiscrepancyResolved) for e in led.emitted)


def test_an_open_discrepancy_whose_amounts_move_emits_amount_changed_with_before_and_after() -> None:
    from events.types import DiscrepancyAmountChanged

    led = enrolled()
    led.apply(bill(UMP_EMP), pay(50_000, payment_id="P1", trace="T1"))
    d = led.one_open("underpaid")
    [out] = led.apply(pay(20_000, payment_id="P2", trace="T2", event_id="top-up-1"))
    [changed] = [e for e in out.emitted if isinstance(e, DiscrepancyAmountChanged)]
    assert changed.discrepancy_id == d.discrepancy_id
    assert (changed.previous_expected_cents, changed.previous_actual_cents) == (78_412, 50_000)
    assert (changed.expected_cents, changed.actual_cents) == (78_412, 70_000)
    assert changed.event_id == f"{d.discrepancy_id}:changed:top-up-1"
    assert changed.changing_event_ids == ("top-up-1",) and changed.causation_id == "top-up-1"
    assert led.one_open("underpaid").actual_cents == 70_000
