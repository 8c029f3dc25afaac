"""Working the queue: every action on a discrepancy is an event folded by processor/workflow.py."""

from __future__ import annotations

from datetime import UTC, date, datetime
from itertools import count
from typing import Any

import msgspec
import pytest

from events.codec import EventDecodeError, decode_input, encode
from events.types import (
    DiscrepancyAction,
    DiscrepancyAssigned,
    DiscrepancyClosed,
    DiscrepancyDismissed,
    DiscrepancyNoted,
    DiscrepancyOpened,
    DiscrepancyReopened,
    DiscrepancyResolved,
    DiscrepancyStatusSet,
    DiscrepancyWaived,
    DiscrepancyWrittenOff,
    Event,
    RetroChangeApproved,
    RetroChangeRejected,
    WaiverApproved,
    WaiverRejected,
)
from processor.rules.base import Rejected
from processor.rules.workflow import agency_of, closing_adjustments
from processor.settings import PlanSettings
from processor.state import AccountState, decode_account, encode_state, month_key
from projections.model import QueueQuery
from replay.archive import ArchivedEvent
from replay.fold import replay
from tests.unit.builders import (
    ACCOUNT,
    AGENCY,
    FEB,
    JAN,
    MAR,
    T0,
    UMP_EMP,
    Feed,
    Ledger,
    adjust,
    bill,
    day,
    enroll,
    make,
    pay,
    rate,
    reverse,
    run,
)

_ids = count(1)


def act(cls: type[DiscrepancyAction], discrepancy_id: str, *, user: str = "sam", role: str = "specialist",
        account: str = ACCOUNT, event_id: str | None = None, **fields: Any) -> Any:
    """An action as the web workbench publishes it (source web:<user>)."""
    return cls(
        event_id=event_id or f"wf-{next(_ids):05d}", account_id=account, effective_on=MAR, occurred_at=T0,
        source=f"web:{user}", discrepancy_id=discrepancy_id, user=user, role=role,  # type: ignore[arg-type]
        **fields,
    )


WORKFLOW_SAMPLES: list[Event] = [
    act(DiscrepancyAssigned, "d1", event_id="e-wf-assign", assignee="sam"),
    act(DiscrepancyAssigned, "d1", event_id="e-wf-unassign", assignee=None, reason="back to the pool"),
    act(DiscrepancyNoted, "d1", event_id="e-wf-note", note="called the agency", role="agency_coordinator",
        agency_id="AG-001"),
    act(DiscrepancyStatusSet, "d1", event_id="e-wf-status", work_status="waiting_agency"),
    act(DiscrepancyWaived, "d1", event_id="e-wf-waive", amount_cents=-8_412, reason="hardship"),
    act(DiscrepancyWrittenOff, "d1", event_id="e-wf-writeoff", amount_cents=1_588, reason="small credit"),
    act(WaiverApproved, "d1", event_id="e-wf-approve", role="supervisor", user="sue", request_event_id="e-wf-waive"),
    act(WaiverRejected, "d1", event_id="e-wf-reject", role="supervisor", user="sue", request_event_id="e-wf-waive",
        reason="collect it"),
    act(RetroChangeApproved, "d1", event_id="e-wf-retro-ok", role="supervisor", user="sue", amount_cents=75_968),
    act(RetroChangeRejected, "d1", event_id="e-wf-retro-no", role="supervisor", user="sue", reason="too late"),
    act(DiscrepancyDismissed, "d1", event_id="e-wf-dismiss", reason="reversed and refunded"),
    act(DiscrepancyReopened, "d1", event_id="e-wf-reopen", reason="closed by mistake"),
]


def underpaid(paid: int, plan: PlanSettings | None = None) -> tuple[Ledger, str]:
    """January billed $784.12 and paid ``paid``: an open underpaid (or overpaid) discrepancy."""
    ledger = Ledger(plan=plan or PlanSettings())
    ledger.apply(rate(UMP_EMP), enroll(), bill(UMP_EMP), pay(paid))
    (d,) = ledger.open()
    return ledger, d.discrepancy_id


def month(ledger: Ledger, m: date = JAN) -> Any:
    return ledger.account().months[month_key(m)]


def closed_events(ledger: Ledger) -> list[DiscrepancyClosed]:
    return [e for e in ledger.emitted if isinstance(e, DiscrepancyClosed)]  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# assign, note, status


def test_assigning_noting_and_waiting_change_the_discrepancy_and_move_no_money() -> None:
    ledger, did = underpaid(70_000)
    before = month(ledger).balance_cents
    (out,) = ledger.apply(act(DiscrepancyAssigned, did, assignee="sam"))
    assert [c.assignee for c in out.changed_discrepancies] == ["sam"] and not out.emitted
    assert out.dirty_months == {month_key(JAN)}  # the month's stored row holds its findings: it is written again
    ledger.apply(act(DiscrepancyNoted, did, note="asked payroll for the March register"),
                 act(DiscrepancyStatusSet, did, work_status="waiting_agency", reason="register requested"))
    d = ledger.one_open("underpaid")
    assert (d.assignee, d.work_status, d.notes, d.last_user) == ("sam", "waiting_agency", 1, "sam")
    assert d.last_reason == "register requested"
    assert month(ledger).balance_cents == before == UMP_EMP - 70_000


def test_a_specialist_takes_their_own_work_and_a_supervisor_assigns_it_to_others() -> None:
    ledger, did = underpaid(70_000)
    with pytest.raises(Rejected, match="supervisor assigns") as exc:
        ledger.apply(act(DiscrepancyAssigned, did, assignee="kim"))
    assert exc.value.field == "assignee"
    ledger.apply(act(DiscrepancyAssigned, did, assignee="kim", user="sue", role="supervisor"))
    with pytest.raises(Rejected, match="supervisor assigns"):
        ledger.apply(act(DiscrepancyAssigned, did, assignee="sam"))  # kim's work now
    assert ledger.one_open("underpaid").assignee == "kim"


def test_an_auditor_changes_nothing() -> None:
    ledger, did = underpaid(70_000)
    with pytest.raises(Rejected, match="auditor reads everything and changes nothing"):
        ledger.apply(act(DiscrepancyNoted, did, user="ava", role="auditor", note="looks fine"))
    assert ledger.one_open("underpaid").notes == 0


def test_an_agency_coordinator_answers_only_their_agencys_items() -> None:
    ledger, did = underpaid(70_000)
    with pytest.raises(Rejected, match=f"belongs to agency {AGENCY}, not to AG-999") as exc:
        ledger.apply(act(DiscrepancyNoted, did, user="cora", role="agency_coordinator", agency_id="AG-999",
                         note="not ours"))
    assert exc.value.field == "agency_id"
    ledger.apply(act(DiscrepancyNoted, did, user="cora", role="agency_coordinator", agency_id=AGENCY,
                     note="payroll fixed the deduction from April"),
                 act(DiscrepancyStatusSet, did, user="cora", role="agency_coordinator", agency_id=AGENCY,
                     work_status="open"))
    with pytest.raises(Rejected, match="may not waive"):
        ledger.apply(act(DiscrepancyWaived, did, user="cora", role="agency_coordinator", agency_id=AGENCY,
                         amount_cents=-8_412, reason="please"))
    with pytest.raises(Rejected, match="answers an item"):
        ledger.apply(act(DiscrepancyStatusSet, did, user="cora", role="agency_coordinator", agency_id=AGENCY,
                         work_status="waiting_member"))
    assert ledger.one_open("underpaid").notes == 1


def test_an_action_on_an_unknown_discrepancy_is_refused_naming_it() -> None:
    ledger, _did = underpaid(70_000)
    with pytest.raises(Rejected, match="discrepancy nope is not open on account M000001"):
        ledger.apply(act(DiscrepancyNoted, "nope", note="?"))


def test_a_refused_action_leaves_the_account_exactly_as_it_was() -> None:
    ledger, did = underpaid(50_000)
    before = encode_state(ledger.account())
    with pytest.raises(Rejected, match=r"is -\$284.12, not -\$100.00"):
        ledger.apply(act(DiscrepancyWaived, did, amount_cents=-10_000, reason="hardship"))
    assert encode_state(ledger.account()) == before


# ---------------------------------------------------------------------------------------------
# waive and write off


def test_a_waiver_within_the_limit_posts_the_adjustment_and_closes_the_discrepancy_as_waived() -> None:
    ledger, did = underpaid(70_000)
    (out,) = ledger.apply(act(DiscrepancyWaived, did, amount_cents=-8_412, reason="hardship", event_id="w1"))
    m = month(ledger)
    assert [(a.adjustment_id, a.amount_cents, a.event_id) for a in m.adjustments] == [("w1:0", -8_412, "w1")]
    assert m.balance_cents == 0
    assert ledger.open() == []
    (closed,) = closed_events(ledger)
    assert (closed.discrepancy_id, closed.status, closed.adjustment_cents, closed.user) == (
        did, "waived", -8_412, "sam")
    assert closed.causation_id == "w1" and closed.closing_event_ids == ("w1",)
    assert not any(isinstance(e, DiscrepancyResolved) and e.discrepancy_id == did for e in out.emitted)
    assert ledger.account().closed[did].work_status == "waived"
    assert month_key(JAN) in out.dirty_months


def test_a_waiver_above_the_limit_waits_for_a_second_person_who_is_a_supervisor() -> None:
    ledger, did = underpaid(50_000)  # short by $284.12, above the default $100.00
    ledger.apply(act(DiscrepancyWaived, did, amount_cents=-28_412, reason="member in hardship", event_id="w1"))
    d = ledger.one_open("underpaid")
    assert d.pending is not None and (d.pending.amount_cents, d.pending.requested_by) == (-28_412, "sam")
    assert month(ledger).adjustments == []
    with pytest.raises(Rejected, match="may not approve"):
        ledger.apply(act(WaiverApproved, did, user="kim", request_event_id="w1"))
    with pytest.raises(Rejected, match="another supervisor approves"):
        ledger.apply(act(WaiverApproved, did, user="sam", role="supervisor", request_event_id="w1"))
    with pytest.raises(Rejected, match="waits for approval"):
        ledger.apply(act(DiscrepancyWaived, did, amount_cents=-28_412, reason="again"))
    ledger.apply(act(WaiverApproved, did, user="sue", role="supervisor", request_event_id="w1", event_id="ok1"))
    assert ledger.open() == [] and month(ledger).balance_cents == 0
    (closed,) = closed_events(ledger)
    assert (closed.status, closed.user, closed.closing_event_ids) == ("waived", "sam", ("w1", "ok1"))
    assert "approved by sue" in closed.reason


def test_a_rejected_waiver_leaves_the_discrepancy_open_without_the_request() -> None:
    ledger, did = underpaid(50_000)
    ledger.apply(act(DiscrepancyWaived, did, amount_cents=-28_412, reason="hardship", event_id="w1"))
    with pytest.raises(Rejected, match="no waiver or write-off w9"):
        ledger.apply(act(WaiverRejected, did, user="sue", role="supervisor", request_event_id="w9", reason="no"))
    ledger.apply(act(WaiverRejected, did, user="sue", role="supervisor", request_event_id="w1", reason="collect it"))
    d = ledger.one_open("underpaid")
    assert d.pending is None and d.last_reason == "collect it" and month(ledger).adjustments == []


def test_an_approval_after_the_amounts_moved_is_refused() -> None:
    ledger, did = underpaid(50_000)
    ledger.apply(act(DiscrepancyWaived, did, amount_cents=-28_412, reason="hardship", event_id="w1"))
    ledger.apply(pay(10_000, payment_id="P-top-up"))
    with pytest.raises(Rejected, match="the amounts moved since the request"):
        ledger.apply(act(WaiverApproved, did, user="sue", role="supervisor", request_event_id="w1"))


def test_writing_off_a_credit_posts_a_positive_adjustment() -> None:
    ledger, did = underpaid(80_000)  # overpaid by $15.88
    assert ledger.one_open("overpaid").discrepancy_id == did
    ledger.apply(act(DiscrepancyWrittenOff, did, amount_cents=1_588, reason="below the refund threshold"))
    assert month(ledger).balance_cents == 0 and ledger.open() == []
    assert closed_events(ledger)[0].status == "written_off"


def test_a_missing_payment_is_written_off_by_the_whole_bill() -> None:
    ledger = Ledger()
    ledger.apply(rate(UMP_EMP), enroll(), bill(UMP_EMP), day(date(2026, 3, 5)))
    d = ledger.one_open("missing_payment")
    assert closing_adjustments(ledger.account(), ledger.part, ledger.plan, d) == [(None, -UMP_EMP)]
    ledger.apply(act(DiscrepancyWrittenOff, d.discrepancy_id, amount_cents=-UMP_EMP, reason="uncollectible",
                     event_id="wo1"),
                 act(WaiverApproved, d.discrepancy_id, user="sue", role="supervisor", request_event_id="wo1"))
    ledger.apply(day(date(2026, 3, 6)))  # a later business day does not find it missing again
    assert ledger.open() == [] and month(ledger).balance_cents == 0


def test_waiving_a_wrong_rate_corrects_that_plans_bill() -> None:
    ledger = Ledger()
    ledger.apply(rate(UMP_EMP), enroll(), bill(70_000))
    d = ledger.one_open("wrong_rate")
    assert closing_adjustments(ledger.account(), ledger.part, ledger.plan, d) == [("UMP-CLASSIC", 8_412)]
    ledger.apply(act(DiscrepancyWaived, d.discrepancy_id, amount_cents=8_412, reason="billing agrees"))
    assert ledger.open() == [] and month(ledger).adjusted_cents == 8_412


def test_a_finding_no_adjustment_closes_cannot_be_waived() -> None:
    ledger = Ledger()
    ledger.apply(pay(5_000, month=None, payer="AG-009", payment_id="P-stray"))
    d = ledger.one_open("unmatched_payment")
    with pytest.raises(Rejected, match="no adjustment closes a unmatched_payment"):
        ledger.apply(act(DiscrepancyWaived, d.discrepancy_id, amount_cents=-5_000, reason="?"))


def test_a_payroll_month_with_biweekly_deductions_is_waived_to_what_its_deductions_owe() -> None:
    ledger = Ledger()
    ledger.apply(rate(UMP_EMP), enroll(), bill(UMP_EMP))
    for i, amount in enumerate((36_190, 20_000)):
        p = pay(amount, payment_id=f"P-bw{i}")
        ledger.apply(msgspec.structs.replace(p, pay_frequency="biweekly"))
    d = ledger.one_open("underpaid")
    ((plan_id, amount),) = closing_adjustments(ledger.account(), ledger.part, ledger.plan, d)
    ledger.apply(act(DiscrepancyWaived, d.discrepancy_id, amount_cents=amount, reason="hardship", event_id="bw"),
                 act(WaiverApproved, d.discrepancy_id, user="sue", role="supervisor", request_event_id="bw"))
    assert plan_id is None and ledger.open() == []


# ---------------------------------------------------------------------------------------------
# dismiss and reopen


def billed_not_enrolled_after_reversal() -> tuple[Ledger, str]:
    """Coverage ended in January, February was billed and paid; the payment was reversed correctly."""
    ledger = Ledger()
    ledger.apply(rate(UMP_EMP), enroll(end=date(2026, 1, 31)), bill(UMP_EMP, month=FEB),
                 pay(UMP_EMP, month=FEB, payment_id="P-feb"), reverse("P-feb"))
    d = ledger.one_open("billed_not_enrolled")
    return ledger, d.discrepancy_id


def test_a_dismissed_finding_stays_closed_while_its_amounts_stay_the_same() -> None:
    ledger, did = billed_not_enrolled_after_reversal()
    ledger.apply(act(DiscrepancyDismissed, did, reason="bill cancelled in the billing system; not sent"))
    assert ledger.open() == [] and closed_events(ledger)[0].status == "closed"
    ledger.apply(enroll(plan="DELTA-PPO", line="dental", begin=date(2026, 1, 1), end=date(2026, 1, 31)))
    assert ledger.open("billed_not_enrolled") == []  # every month was reconciled again: still closed
    ledger.apply(bill(6_450, month=FEB, plan="DELTA-PPO"))  # more money billed: a new finding
    reopened = ledger.one_open("billed_not_enrolled")
    assert reopened.discrepancy_id != did and reopened.actual_cents == UMP_EMP + 6_450


def test_reopening_a_waiver_reverses_its_adjustment_and_opens_the_finding_under_a_new_id() -> None:
    ledger, did = underpaid(70_000)
    ledger.apply(act(DiscrepancyAssigned, did, assignee="sam"),
                 act(DiscrepancyWaived, did, amount_cents=-8_412, reason="hardship", event_id="w1"))
    (out,) = ledger.apply(act(DiscrepancyReopened, did, reason="waived the wrong month", event_id="r1"))
    d = ledger.one_open("underpaid")
    assert d.discrepancy_id != did and d.assignee == "sam" and d.opened_by == "r1"
    assert [a.amount_cents for a in month(ledger).adjustments] == [-8_412, 8_412]
    assert month(ledger).balance_cents == 8_412
    assert [type(e) for e in out.emitted] == [DiscrepancyOpened]
    with pytest.raises(Rejected, match="cannot be reopened on M000001: it is open"):
        ledger.apply(act(DiscrepancyReopened, d.discrepancy_id, reason="again"))
    with pytest.raises(Rejected, match="no person closed it"):
        ledger.apply(act(DiscrepancyReopened, did, reason="again"))


def _same_indexes_as_a_fresh_copy(account: AccountState) -> None:
    """The findings indexes the fold kept (built before the actions, kept by them) are what a copy of
    the state, which builds them from scratch, finds, in the same order."""
    fresh = decode_account(encode_state(account))
    rows = fresh.finding_rows() | account.finding_rows()
    assert rows
    for row in rows:
        assert account.open_at(row) == fresh.open_at(row) and account.closed_at(row) == fresh.closed_at(row)


def test_closing_dismissing_and_reopening_keep_the_findings_by_row_as_a_full_scan_finds_them() -> None:
    ledger, did = underpaid(70_000)
    assert ledger.account().open_at(month_key(JAN)) == (f"underpaid|{month_key(JAN)}",)  # built here, then kept
    ledger.apply(act(DiscrepancyWaived, did, amount_cents=-8_412, reason="hardship", event_id="w1"))
    _same_indexes_as_a_fresh_copy(ledger.account())
    assert ledger.account().open_at(month_key(JAN)) == () and ledger.account().closed_at(month_key(JAN)) == (did,)
    ledger.apply(act(DiscrepancyReopened, did, reason="waived the wrong month", event_id="r1"))
    _same_indexes_as_a_fresh_copy(ledger.account())
    reopened = ledger.one_open("underpaid")
    assert ledger.account().closed_at(month_key(JAN)) == ()
    ledger.apply(act(DiscrepancyDismissed, reopened.discrepancy_id, reason="agreed with the agency"))
    _same_indexes_as_a_fresh_copy(ledger.account())
    assert ledger.account().closed_at(month_key(JAN)) == (reopened.discrepancy_id,)


def test_a_dismissed_finding_that_went_away_cannot_be_reopened() -> None:
    ledger, did = billed_not_enrolled_after_reversal()
    ledger.apply(act(DiscrepancyDismissed, did, reason="cancelled"), adjust(-UMP_EMP, month=FEB, plan="UMP-CLASSIC"))
    with pytest.raises(Rejected, match="not there any more"):
        ledger.apply(act(DiscrepancyReopened, did, reason="?"))


# ---------------------------------------------------------------------------------------------
# retroactive changes beyond the limit


def retro_beyond_limit() -> tuple[Ledger, str]:
    ledger = Ledger(plan=PlanSettings(retroactive_limit_days=60))
    late = enroll(action="change", tier="ESP", begin=FEB)
    late = msgspec.structs.replace(late, occurred_at=datetime(2026, 6, 15, 9, tzinfo=UTC))
    ledger.apply(rate(UMP_EMP), rate(154_380, tier="ESP"), enroll(), bill(UMP_EMP, month=FEB), late)
    d = ledger.one_open("retroactive_change")
    assert "needs approval" in d.action
    return ledger, d.discrepancy_id


def test_an_approved_retroactive_change_bills_the_difference_and_is_resolved() -> None:
    ledger, did = retro_beyond_limit()
    with pytest.raises(Rejected, match="a supervisor approves or rejects it"):
        ledger.apply(act(DiscrepancyWaived, did, amount_cents=75_968, reason="bill it"))
    with pytest.raises(Rejected, match="may not approve or reject a retroactive change"):
        ledger.apply(act(RetroChangeApproved, did, amount_cents=75_968))
    (out,) = ledger.apply(act(RetroChangeApproved, did, user="sue", role="supervisor", amount_cents=75_968))
    assert ledger.open() == [] and month(ledger, FEB).adjusted_cents == 75_968
    assert any(isinstance(e, DiscrepancyResolved) and e.discrepancy_id == did for e in out.emitted)


def test_a_rejected_retroactive_change_is_closed_and_billing_stays() -> None:
    ledger, did = retro_beyond_limit()
    ledger.apply(act(RetroChangeRejected, did, user="sue", role="supervisor", reason="beyond the 60-day rule"))
    ledger.apply(enroll(plan="DELTA-PPO", line="dental"))  # reconciles every month again
    assert ledger.open("retroactive_change") == [] and month(ledger, FEB).billed_cents == UMP_EMP
    assert closed_events(ledger)[0].status == "closed"


def test_a_retroactive_change_within_the_limit_needs_no_approval() -> None:
    ledger = Ledger()
    ledger.apply(rate(UMP_EMP), rate(154_380, tier="ESP"), enroll(), bill(UMP_EMP, month=FEB),
                 enroll(action="change", tier="ESP", begin=FEB))
    d = ledger.one_open("retroactive_change")
    with pytest.raises(Rejected, match="no approval is needed"):
        ledger.apply(act(RetroChangeApproved, d.discrepancy_id, user="sue", role="supervisor", amount_cents=75_968))


# ---------------------------------------------------------------------------------------------
# the agency, the codec, and the rows the processor and replay write


def test_the_agency_of_a_discrepancy_is_its_subscribers_latest_coverage_or_the_payer() -> None:
    ledger, _did = underpaid(70_000)
    account = ledger.account()
    assert agency_of(account, "someone") == AGENCY
    ledger.apply(enroll(plan="DELTA-PPO", line="dental", begin=FEB, agency="AG-002"))
    assert agency_of(account, None) == "AG-002"
    assert agency_of(ledger.account("payer:AG-007"), None) == "AG-007"
    assert agency_of(ledger.account("X-unknown"), "AG-003") == "AG-003"


@pytest.mark.parametrize("field, changes", [
    ("reason", {"reason": "  "}),
    ("note", {"note": ""}),
    ("user", {"user": ""}),
    ("discrepancy_id", {"discrepancy_id": ""}),
    ("reason", {"reason": "x" * 2001}),
    ("role", {"role": "janitor"}),
])
def test_actions_are_validated_at_the_boundary_naming_the_field(field: str, changes: dict[str, Any]) -> None:
    sample = {"reason": WORKFLOW_SAMPLES[4], "note": WORKFLOW_SAMPLES[2]}.get(field, WORKFLOW_SAMPLES[2])
    data = msgspec.json.decode(encode(sample))
    data.update(changes)
    with pytest.raises(EventDecodeError) as exc:
        decode_input(msgspec.json.encode(data))
    assert exc.value.field == field


def test_rows_follow_the_work_and_replay_writes_the_same_rows_as_the_processor() -> None:
    proc, store = make()
    feed = Feed()
    setup = [rate(UMP_EMP), enroll(), bill(UMP_EMP), pay(50_000),
             enroll(account="M000002"), bill(UMP_EMP, account="M000002"), pay(70_000, account="M000002")]
    run(proc, store, feed.records(*setup))
    big = store.discrepancy_queue(QueueQuery(account_id=ACCOUNT)).rows[0].discrepancy_id
    small = store.discrepancy_queue(QueueQuery(account_id="M000002")).rows[0].discrepancy_id
    actions = [
        act(DiscrepancyAssigned, big, assignee="sam"),
        act(DiscrepancyWaived, big, amount_cents=-28_412, reason="hardship", event_id="big-waive"),
        act(DiscrepancyNoted, small, account="M000002", note="called"),
        act(DiscrepancyWaived, small, account="M000002", amount_cents=-8_412, reason="small"),
    ]
    run(proc, store, feed.records(*actions))
    row = store.discrepancy(big)
    assert row is not None and (row.status, row.assignee, row.pending_action, row.pending_cents, row.pending_by) == (
        "open", "sam", "waive", -28_412, "sam")
    assert store.discrepancy_queue(QueueQuery(pending=True)).total == 1
    small_row = store.discrepancy(small)
    assert small_row is not None
    assert (small_row.status, small_row.notes, small_row.work_status) == ("waived", 1, "waived")
    run(proc, store, feed.records(act(WaiverApproved, big, user="sue", role="supervisor",
                                      request_event_id="big-waive")))
    row = store.discrepancy(big)
    assert row is not None and (row.status, row.pending_action, row.last_user) == ("waived", None, "sue")
    assert store.balance(ACCOUNT).months[0].balance_cents == 0  # type: ignore[union-attr]

    archived = [ArchivedEvent(seq, r.partition, r.event_id, r.event_type, r.account_id, r.recorded_at, r.body)
                for seq, r in enumerate(store.archive, start=1)]
    replayed = replay(archived, PlanSettings())
    live = {d.discrepancy_id: d for d in store.discrepancies(limit=100)}
    assert replayed.discrepancies == live
