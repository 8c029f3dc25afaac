"""Properties: batch-size independence (replay == live in miniature), the balance identity, a total fold."""

from __future__ import annotations

from collections import Counter
from dataclasses import astuple, dataclass, replace
from datetime import date, timedelta
from functools import cache
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from events.codec import EventDecodeError, decode_input, decode_output, encode
from events.types import BROADCAST_ACCOUNT, Event, FsaClaimAdjudicated, RemittanceLinePosted
from processor.batch import BatchProcessor, Record, partition_for
from processor.entrypoints.demo import CLAIM_DECISIONS, INJECTED_KINDS, Judgement, Program, generate, judge
from processor.rules.base import Rejected
from processor.settings import PlanSettings
from processor.state import UNAPPLIED_STATUSES
from projections.memory import MemoryStore
from projections.model import CLAIMS_STREAM, PAYMENTS_STREAM, OutboxRow, month_rows
from tests.unit.builders import (
    ACCOUNT,
    JAN,
    LOG,
    NOW,
    PARTITIONS,
    TOPICS,
    Feed,
    Ledger,
    adjust,
    bill,
    day,
    enroll,
    pay,
    rate,
    reverse,
)

# -- the demo generator ---------------------------------------------------------------------------


def test_demo_generate_is_deterministic_for_a_seed() -> None:
    a, b = generate(members=30, months=4, seed=7), generate(members=30, months=4, seed=7)
    assert [(name, [encode(e) for e in evs]) for name, evs in a.phases] == \
        [(name, [encode(e) for e in evs]) for name, evs in b.phases]
    assert a.expected == b.expected
    assert [encode(e) for e in a.exact_duplicates] == [encode(e) for e in b.exact_duplicates]
    assert a.raw_records == b.raw_records
    c = generate(members=30, months=4, seed=8)
    assert [encode(e) for _, evs in c.phases for e in evs] != [encode(e) for _, evs in a.phases for e in evs]


def test_demo_generate_injects_every_kind_it_claims_and_each_is_a_domain_kind() -> None:
    from events.types import DISCREPANCY_KINDS

    program = generate(members=30, months=4, seed=7)
    assert set(INJECTED_KINDS) <= set(DISCREPANCY_KINDS)
    assert {kind for kind, _, _ in program.expected} == set(INJECTED_KINDS)
    # every kind of the domain is injected, so the demo checks each detector end to end
    assert set(INJECTED_KINDS) == set(DISCREPANCY_KINDS)


def test_demo_cobra_members_elect_before_enrollment_and_pay_102_percent_or_a_little_short() -> None:
    from events.types import EnrollmentChanged, PaymentReceived, PremiumBilled, RatePublished

    program = generate(members=200, months=6, seed=4)
    events = [e for _, evs in program.phases for e in evs]
    cobra = [e for e in events if isinstance(e, EnrollmentChanged) and e.status == "cobra"]
    accounts = {e.account_id for e in cobra}
    assert len(accounts) >= 2
    for e in cobra:
        assert e.elected_on is not None and e.cobra_start is not None
        assert e.elected_on <= e.occurred_at.date()  # elected before HR sent the enrollment
    rates = {(e.plan, e.tier, e.month_from): e.total_cents for e in events if isinstance(e, RatePublished)}
    shortfalls = {(a, m) for kind, a, m in program.expected if kind == "cobra_shortfall"}
    assert shortfalls and {a for a, _ in shortfalls} <= accounts
    assert not {(kind, a) for kind, a, _ in program.expected if a in accounts} - {
        ("cobra_shortfall", a) for a, _ in shortfalls}, "a COBRA member carries another injected error"
    billed: dict[tuple[str, date], int] = {}
    for b in (e for e in events if isinstance(e, PremiumBilled) and e.account_id in accounts):
        rate = max((frm, total) for (plan, tier, frm), total in rates.items()
                   if plan == b.plan and tier == b.tier and frm <= b.coverage_month)[1]
        assert b.amount_cents == (rate * 102 + 50) // 100, b
        billed[(b.account_id, b.coverage_month)] = billed.get((b.account_id, b.coverage_month), 0) + b.amount_cents
    for p in (e for e in events if isinstance(e, PaymentReceived) and e.account_id in accounts):
        assert p.coverage_month is not None
        owed = billed[(p.account_id, p.coverage_month)]
        short = owed - p.amount_cents
        if (p.account_id, p.coverage_month) in shortfalls:
            assert 0 < short <= min(5_000, owed // 10)
        else:
            assert short == 0


def test_demo_fsa_elections_are_within_the_2026_limits_and_contributions_within_the_election() -> None:
    from events.types import FsaClaimSubmitted, FsaContributionReceived, FsaElectionMade

    program = generate(members=300, months=12, seed=2)
    events = [e for _, evs in program.phases for e in evs]
    elections = {(e.account_id, e.account_type): e for e in events if isinstance(e, FsaElectionMade)}
    assert 0.08 <= len({a for a, _ in elections}) / program.accounts <= 0.15
    assert {t for _, t in elections} == {"health", "dependent_care"}
    contributed: Counter[tuple[str, str]] = Counter()
    for e in events:
        if isinstance(e, FsaContributionReceived):
            assert (e.account_id, e.account_type) in elections and e.plan_year == 2026
            contributed[(e.account_id, e.account_type)] += e.amount_cents
    for key, e in elections.items():
        limit = 340_000 if e.account_type == "health" else (
            375_000 if e.tax_filing_status == "married_filing_separately" else 750_000)
        assert 0 < e.election_cents <= limit, e
        assert contributed[key] == e.election_cents  # a whole plan year of payroll contributes the election
    claims = [e for e in events if isinstance(e, FsaClaimSubmitted)]
    assert {c.claim_id for c in claims} == set(program.claims)
    by_why = Counter((c.why, c.decision) for c in program.claims.values())
    assert by_why[("ordinary", "approved")] > 100
    assert by_why[("beyond contributions", "partially_approved")] >= 1
    assert by_why[("nothing left", "partially_approved")] >= 1 and by_why[("nothing left", "denied")] >= 1
    assert by_why[("before the plan year", "denied")] >= 1 and by_why[("not yet incurred", "denied")] >= 1
    assert by_why[("before any contribution", "pending")] >= 1
    for c in program.claims.values():
        decision, approved, pending = c.adjudications[0]
        low, high = {"approved": (c.requested_cents, c.requested_cents), "denied": (0, 0), "pending": (0, 0),
                     "partially_approved": (1, c.requested_cents - 1)}[decision]
        assert low <= approved <= high and (pending == 0 or c.account_type == "dependent_care"), c
        assert (decision == "pending") == (approved == 0 and pending > 0), c
        # each later contribution pays part of what is pending, until nothing is
        for (later, paid, left), (_, _, before) in zip(c.adjudications[1:], c.adjudications, strict=False):
            assert 0 < paid <= before and left == before - paid, c
            assert later == ("approved" if left == 0 else "partially_approved"), c
        assert c.approved_cents + c.adjudications[-1][2] <= c.requested_cents, c
    # a whole plan year of contributions pays every pending remainder
    assert all(c.adjudications[-1][2] == 0 for c in program.claims.values())
    assert sum(1 for c in program.claims.values() if len(c.adjudications) > 1) >= 2


def test_demo_misdirected_lines_are_applied_to_the_member_and_some_refunds_come_back() -> None:
    from events.types import CashApplied, PaymentReceived, PremiumBilled, RefundIssued, RefundReturned

    program = generate(members=300, months=12, seed=3)
    events = [e for _, evs in program.phases for e in evs]
    applications = [e for e in events if isinstance(e, CashApplied)]
    assert applications and program.derived_payments == len(applications)
    assert program.derived_lines == sum(1 for e in events if isinstance(e, PaymentReceived) and e.remittance_id)
    payments = {e.payment_id: e for e in events if isinstance(e, PaymentReceived)}
    for a in applications:
        line = payments[a.payment_id]
        assert line.account_id == a.account_id and line.amount_cents == a.amount_cents
        # a member id keyed with a digit too many (the month named), or the member's own line naming no month
        assert (line.coverage_month, line.account_id == a.to_account_id) in {
            (a.to_coverage_month, False), (None, True)}
        assert a.effective_on > line.effective_on + timedelta(days=45)
        billed = sum(e.amount_cents for e in events if isinstance(e, PremiumBilled)
                     and (e.account_id, e.coverage_month) == (a.to_account_id, a.to_coverage_month))
        assert billed == a.amount_cents  # the member's month is paid in full once the cash is applied
        assert program.expected_rows[("unmatched_payment", a.account_id, line.coverage_month, "resolved")] == 1
        assert program.expected_rows[("missing_payment", a.to_account_id, a.to_coverage_month, "resolved")] == 1
    assert {payments[a.payment_id].coverage_month is None for a in applications} == {True, False}
    refunds = {e.refund_id: e for e in events if isinstance(e, RefundIssued)}
    returned = [e for e in events if isinstance(e, RefundReturned)]
    assert returned and len(refunds) > len(returned)
    for r in returned:
        month = refunds[r.refund_id].coverage_month
        assert program.expected_rows[("refund_due", r.account_id, month, "resolved")] == 1
        assert program.expected_rows[("refund_due", r.account_id, month, "open")] == 1


@pytest.mark.parametrize(("members", "months"), [(25, 3), (50, 6), (200, 4)])
def test_every_event_the_demo_generates_passes_the_checks_the_publisher_makes(members: int, months: int) -> None:
    """The publisher refuses an event the codec would dead-letter (a tier change effective on the day a
    dependent's coverage began once ended a spouse the day before it began): no seed may generate one."""
    for seed in range(12):
        program = generate(members=members, months=months, seed=seed)
        for _, events in program.phases:
            for event in events:
                assert decode_input(encode(event)) == event, (seed, event.event_id)


def test_a_program_too_small_for_its_errors_says_so_and_nothing_else_goes_wrong() -> None:
    """At the minimum size some seeds leave too few steadily enrolled members: always the demo's usage
    error (the CLI prints it on one line, exit 2), never another failure."""
    from processor.entrypoints.demo import ProgramTooSmall

    with pytest.raises(ProgramTooSmall, match="at least 20 members and 3 months"):
        generate(members=19, months=3, seed=1)
    outcomes = []
    for seed in range(40):
        try:
            generate(members=20, months=3, seed=seed)
            outcomes.append("ok")
        except ProgramTooSmall as exc:
            outcomes.append(str(exc))
    assert outcomes.count("ok") >= 30 and set(outcomes) <= {
        "ok", "not enough members to place the injected errors; raise --members"}


def test_demo_families_match_their_tiers_except_where_an_eligibility_error_is_injected() -> None:
    """Every month's tier fits the dependents covered (the demo's own model of the plan's tier rules and
    age limits), through hires, tier changes and terminations, but on the accounts given an eligibility
    error, and there in exactly the months expected."""
    from processor.entrypoints.demo.model import Model

    program = generate(members=300, months=12, seed=5)
    model = Model(program.plan)
    for _, evs in program.phases:
        for e in evs:
            model.apply(e)
    wrong = {(a, m) for (a, m) in model.months() if model.eligibility(a, m) is not None}
    assert wrong and wrong == {(a, m) for kind, a, m in program.expected if kind == "eligibility"}
    # dropped to EMP with the family still covered, and a child past 26 (EnrollmentChanged.birth_date)
    from events.types import EnrollmentChanged

    events = [e for _, evs in program.phases for e in evs]
    tiers = {e.account_id: e.tier for e in events if isinstance(e, EnrollmentChanged) and e.relationship == "self"}
    assert any(tiers[a] == "EMP" for a, _ in wrong)
    children = [e for e in events if isinstance(e, EnrollmentChanged) and e.relationship == "child"]
    assert children and all(e.birth_date is not None for e in children)
    assert any(e.birth_date is not None and e.birth_date.year <= 2001 for e in children)  # 26 within the program


def test_demo_injects_enrollment_out_of_order_late_hires_and_refunds_of_money_that_bounced() -> None:
    """The shapes of issue 11's kinds: a termination that arrives before its add (unknown_coverage,
    resolved by the add) and a change of a coverage never enrolled (open); a new hire whose 834 comes
    after two billing cycles closed (enrolled_not_billed in both, settled by late bills or left open);
    a refund paid out of a payment that then bounced (refund_recovery; the overpaid it settled and the
    missing payment the member then paid resolved)."""
    from events.types import EnrollmentChanged, PaymentReversed, PremiumBilled, RefundIssued

    program = generate(members=300, months=12, seed=5)
    rows = program.expected_rows
    assert rows[next(r for r in rows if r[0] == "unknown_coverage" and r[3] == "resolved")] == 1
    assert any(r[0] == "unknown_coverage" and r[3] == "open" for r in rows)
    by_phase = [(name, evs) for name, evs in program.phases]
    for row, closers in program.closed_by.items():
        if row[0] != "unknown_coverage":
            continue
        add = next(e for _, evs in by_phase for e in evs if e.event_id == closers[0])
        assert isinstance(add, EnrollmentChanged) and add.action == "add"
        phase = next(evs for _, evs in by_phase if add in evs)
        earlier = phase[:phase.index(add)]
        assert any(isinstance(e, EnrollmentChanged) and e.action == "terminate" and e.account_id == add.account_id
                   and e.coverage_line == add.coverage_line for e in earlier)  # the termination came first
    late = {(a, m, s) for k, a, m, s in rows if k == "enrolled_not_billed"}
    assert {s for _, _, s in late} == {"open", "resolved"}
    bills = {(e.account_id, e.coverage_month): e for _, evs in by_phase for e in evs if isinstance(e, PremiumBilled)}
    assert all(bills[(a, m)].due_on > m for a, m, s in late if s == "resolved" and m is not None)  # billed late
    events = [e for _, evs in by_phase for e in evs]
    reversed_ = [e for e in events if isinstance(e, PaymentReversed)]
    assert reversed_
    for r in reversed_:
        refund = next(e for e in events if isinstance(e, RefundIssued) and e.account_id == r.account_id
                      and e.refund_id.endswith("-over"))
        assert events.index(refund) < events.index(r)  # refunded first, then the money came back
        month = refund.coverage_month
        assert rows[("refund_recovery", r.account_id, month, "open")] == 1
        assert rows[("overpaid", r.account_id, month, "resolved")] == 1
        assert rows[("missing_payment", r.account_id, month, "resolved")] == 1


def test_demo_payments_naming_no_month_are_a_retirees_and_a_payroll_lines() -> None:
    """A retiree's direct payment naming no month (the ledger applies it to the oldest balance due: no
    finding) and payroll lines naming none (unmatched cash on the member's account until applied)."""
    program = generate(members=300, months=12, seed=5)
    events = [e for _, evs in program.phases for e in evs]
    from events.types import PaymentReceived

    unmonthed = [e for e in events if isinstance(e, PaymentReceived) and e.coverage_month is None]
    assert {e.method for e in unmonthed} == {"direct", "payroll"}
    for e in unmonthed:
        found = {(k, s) for k, a, m, s in program.expected_rows if a == e.account_id and m is None}
        assert found == (set() if e.method == "direct" else {("unmatched_payment", "resolved")})


def test_the_demo_publishes_a_business_day_once_the_line_reports_it_may_judge_are_folded() -> None:
    """run.waits: before each business day, the reports of exactly the remittances whose lines' window
    ended before it; a month's remittance (paid two days before the month ends) is judged by the next
    month's last day, and every line's report is waited for once."""
    from events.types import DayClosed, PaymentReceived, RemittanceReceived
    from processor.entrypoints.demo.run import waits

    program = generate(members=30, months=4, seed=0)
    plan = waits(program, 3)
    lines = [e for _, evs in program.phases for e in evs if isinstance(e, PaymentReceived) and e.remittance_id]
    assert sorted(r for ids in plan.values() for r in ids) == sorted(f"{e.event_id}:posted" for e in lines)
    for i, reports in plan.items():
        day = next(e.business_date for e in program.phases[i][1] if isinstance(e, DayClosed))
        judged = {e.remittance_id for e in lines if f"{e.event_id}:posted" in reports}
        for _, evs in program.phases[:i]:
            for r in evs:
                if isinstance(r, RemittanceReceived) and r.remittance_id in judged:
                    assert r.payment_date + timedelta(days=3) < day
                    assert (day.year, day.month) != (r.payment_date.year, r.payment_date.month)


def test_every_generated_event_is_a_valid_input_event() -> None:
    program = generate(members=30, months=4, seed=3)
    for _, events in program.phases:
        for e in events:
            assert decode_input(encode(e)) == e


def test_demo_parts_over_consecutive_member_ranges_share_no_id_and_each_part_is_judged_exact() -> None:
    """``first_member``: a part of a larger program (bench/replay.py builds large archives so) numbers
    its members and agencies after the parts before it, and is a whole program of its own."""
    from events.types import EnrollmentChanged, PaymentReceived

    def ids(program: Program) -> tuple[set[str], set[str], set[str], set[str]]:
        events = [e for _, evs in program.phases for e in evs if e.account_id != BROADCAST_ACCOUNT]
        subscribers = {e.account_id for e in events if isinstance(e, EnrollmentChanged)}
        agencies = {e.agency_id for e in events if isinstance(e, EnrollmentChanged)}
        remittances = {e.remittance_id for e in events if isinstance(e, PaymentReceived) and e.remittance_id}
        return subscribers, agencies, remittances, {e.event_id for e in events}

    first, second = generate(members=30, months=4, seed=7), generate(members=30, months=4, seed=8, first_member=30)
    a, b = ids(first), ids(second)
    assert a[0] == {f"M07{i:06d}" for i in range(30)} and b[0] == {f"M08{i:06d}" for i in range(30, 60)}
    assert a[1] == {"AG-001", "AG-002", "AG-003"} and b[1] == {"AG-006", "AG-007", "AG-008"}
    assert all(x and y and not x & y for x, y in zip(a, b, strict=True))
    feed = Feed()
    records = [r for _, events in second.phases for r in feed.records(*events)]
    assert_exact(second, fold_in_batches(records, 10**6))
    with pytest.raises(ValueError, match="first_member"):
        generate(members=30, months=4, seed=7, first_member=-1)


# -- (a) batch-size independence -------------------------------------------------------------------


def program_records(seed: int) -> list[Record]:
    """The demo program as broker records: account events keyed by account, broadcasts to every partition."""
    program = generate(members=30, months=4, seed=seed)
    feed = Feed()
    records: list[Record] = []
    for i, (_, events) in enumerate(program.phases):
        extra = program.exact_duplicates if i == len(program.phases) // 2 else []
        records.extend(feed.records(*events, *extra))
        if i == 1:
            for topic_key, key, value in program.raw_records:
                assert key is not None
                topic = getattr(TOPICS, topic_key)
                records.append(feed.raw(topic, partition_for(key, PARTITIONS), key, value))
    return records


def relay_derived(rows: list[OutboxRow], pending: list[Record], log_end: dict[tuple[str, int], int], *,
                  first: bool) -> list[Record]:
    """The relay: events the ledger posted go to the payments topic, keyed by account.

    A cash application's payment: ``first``, folded before anything still pending, as when the processor
    keeps up with the publisher; else at the end of its topic partition's log, as when everything was
    published before the application was folded (the program does not depend on where it lands).

    A remittance line report (remittance_line_posted) goes back right after the batch that made it, as a
    running relay does: within a relay interval, long before the next business day. So it is placed
    before the next business day or billing cycle still pending, after the rest of what is pending up to
    there (the remittance's own header, the rest of the month's file): the remittance is judged by its
    last line report whatever the batch size, and never by a business day that overtook its lines. Last
    in its log, after later business days, is not how the ledger's relay behaves for these reports.

    A record placed before others of its topic partition takes the offset of the first of them (they
    move one offset on); placed after all of them, the end of the log. ``log_end``: the next offset of
    each topic partition after the records folded so far."""
    if not rows:
        return pending
    control = next((i for i, r in enumerate(pending) if r.topic == TOPICS.control), len(pending))
    last_of = {(r.topic, r.partition): i for i, r in enumerate(pending)}
    inserts: dict[int, list[tuple[tuple[str, int], bytes, bytes]]] = {}
    for row in rows:
        key = row.key.encode()
        tp = (TOPICS.payments, partition_for(key, PARTITIONS))
        if isinstance(decode_input(row.body), RemittanceLinePosted):
            index = control
        else:
            index = 0 if first else last_of.get(tp, -1) + 1
        inserts.setdefault(index, []).append((tp, key, row.body))
    positions: dict[tuple[str, int], list[int]] = {}
    for i, r in enumerate(pending):
        positions.setdefault((r.topic, r.partition), []).append(i)
    ahead = {tp: 0 for tp in positions}  # the next record of the topic partition not yet placed
    shift: Counter[tuple[str, int]] = Counter()
    last: dict[tuple[str, int], int] = {}
    out: list[Record] = []
    for i in range(len(pending) + 1):
        for tp, key, body in inserts.get(i, []):
            later = positions.get(tp, [])
            if ahead.get(tp, 0) < len(later):
                offset = pending[later[ahead[tp]]].offset + shift[tp]
                shift[tp] += 1
            else:
                offset = max(log_end.get(tp, 0), last.get(tp, -1) + 1)
            last[tp] = offset
            out.append(Record(tp[0], tp[1], offset, key, body))
        if i < len(pending):
            r = pending[i]
            tp = (r.topic, r.partition)
            ahead[tp] += 1
            moved = msgspec.structs.replace(r, offset=r.offset + shift[tp]) if shift[tp] else r
            last[tp] = moved.offset
            out.append(moved)
    return out


def next_batch(pending: list[Record], size: int) -> list[Record]:
    """Up to ``size`` records; a batch that holds payments ends before a business day or billing cycle,
    so that the remittance line reports the ledger posts for them come back first (relay_derived)."""
    batch = pending[:size]
    paid = False
    for i, r in enumerate(batch):
        if r.topic == TOPICS.control and paid:
            return batch[:i]
        paid = paid or r.topic == TOPICS.payments
    return batch


def fold_in_batches(records: list[Record], size: int, *, restart: bool = False,
                    derived_first: bool = False, plan: PlanSettings | None = None) -> MemoryStore:
    """Fold ``records`` in batches of ``size``; the events the ledger posts are fed back (relay_derived)."""
    store = MemoryStore()

    def fresh() -> BatchProcessor:
        return BatchProcessor(store, log_id=LOG, plan=plan or PlanSettings(), topics=TOPICS, partitions=PARTITIONS,
                              clock=lambda: NOW)

    proc = fresh()
    pending = list(records)
    log_end: dict[tuple[str, int], int] = {}
    while pending:
        if restart:
            proc = fresh()  # a worker restart between batches: cold cache, state from the store
        batch = next_batch(pending, size)
        pending = pending[len(batch):]
        for r in batch:
            log_end[(r.topic, r.partition)] = max(log_end.get((r.topic, r.partition), 0), r.offset + 1)
        result = proc.process(batch)
        store.commit_batch(result.write)
        proc.committed(result)
        derived = [row for row in result.write.outbox if row.stream == PAYMENTS_STREAM]
        pending = relay_derived(derived, pending, log_end, first=derived_first)
    return store


@dataclass(frozen=True)
class Books:
    discrepancies: list[tuple[Any, ...]]
    months: list[tuple[Any, ...]]
    unapplied: dict[str, int]
    counts: tuple[int, ...]
    archive: list[str]


def books(store: MemoryStore, accounts: list[str]) -> Books:
    months = []
    for a in accounts:
        bal = store.balance(a)
        if bal is not None:
            months.extend(msgspec.structs.astuple(m) for m in bal.months)
    return Books(
        discrepancies=[
            (d.discrepancy_id, d.kind, d.account_id, d.coverage_month, d.status, d.expected_cents,
             d.actual_cents, d.cause_event_ids, d.opened_by, d.resolved_by)
            for d in store.discrepancies(limit=10**9)
        ],
        months=months,
        unapplied=store.payer_unapplied(),
        counts=astuple(store.counts()),
        archive=sorted(r.dedupe_key for r in store.archive),
    )


def accounts_of(records: list[Record]) -> list[str]:
    return sorted({r.key.decode() for r in records if r.key is not None})


@cache
def reference(seed: int) -> tuple[list[Record], Books]:
    records = program_records(seed)
    store = fold_in_batches(records, len(records))
    assert_exact(generate(members=30, months=4, seed=seed), store)  # one batch agrees with the oracle
    return records, books(store, accounts_of(records))


SEEDS = st.integers(min_value=0, max_value=7)  # a few programs, each generated and folded once


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=SEEDS, size=st.integers(min_value=1, max_value=500), derived_first=st.booleans())
def test_folding_in_batches_of_any_size_gives_the_same_books_as_one_batch(seed: int, size: int,
                                                                          derived_first: bool) -> None:
    # the payments the ledger posts for cash applications may come back before or after the rest
    records, one_batch = reference(seed)
    assert books(fold_in_batches(records, size, derived_first=derived_first), accounts_of(records)) == one_batch


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=SEEDS, size=st.integers(min_value=1, max_value=500), derived_first=st.booleans())
def test_restarting_the_worker_between_batches_gives_the_same_books(seed: int, size: int,
                                                                    derived_first: bool) -> None:
    records, one_batch = reference(seed)
    assert books(fold_in_batches(records, size, restart=True, derived_first=derived_first),
                 accounts_of(records)) == one_batch


def test_one_batch_size_one_run_is_identical_to_one_big_batch() -> None:
    records, one_batch = reference(0)
    assert books(fold_in_batches(records, 1, derived_first=True), accounts_of(records)) == one_batch
    # every record, and what the ledger posted itself: a payment for each cash application, a report of
    # each remittance line to its payer's account
    program = generate(members=30, months=4, seed=0)
    assert program.derived_payments >= 1 and program.derived_lines >= 1
    assert one_batch.counts[0] == len(records) + program.derived


def judge_pure(program: Program, store: MemoryStore) -> Judgement:
    """The demo's comparison, on the pure fold: discrepancy and member-month rows, the adjudications in
    the outbox, and the payers' unapplied cash."""
    adjudications = [decode_output(row.body) for _, row in store.outbox_pending(10**9) if row.stream == CLAIMS_STREAM]
    assert all(isinstance(a, FsaClaimAdjudicated) for a in adjudications)
    return judge(program, store.discrepancies(limit=10**9), adjudications,  # type: ignore[arg-type]
                 store.member_months(limit=10**9), unapplied=store.payer_unapplied())


def assert_exact(program: Program, store: MemoryStore) -> Judgement:
    """Every finding, the status it ends in, its amounts, every member-month's figures, every payer's
    unapplied cash and every FSA adjudication as the oracle computed them."""
    verdict = judge_pure(program, store)
    assert (verdict.missed, verdict.spurious, verdict.status_mismatched, verdict.claims_mismatched) == (0, 0, 0, 0), (
        verdict.missed_examples, verdict.spurious_examples, verdict.mismatch_examples)
    assert verdict.claims_adjudicated == len(program.claims)
    assert verdict.amounts_checked == sum(program.expected_rows.values())  # every row's amounts compared
    assert verdict.amounts_mismatched == 0, verdict.amount_examples
    assert verdict.balances_mismatched == 0, verdict.balance_examples
    assert verdict.months_checked == len(store.member_months(limit=10**9)) > 0
    assert verdict.unapplied_mismatched == 0 and verdict.payers_checked > 0, verdict.unapplied_examples
    return verdict


def test_the_demo_program_finds_exactly_the_injected_discrepancies() -> None:
    program = generate(members=30, months=4, seed=0)
    _, one_batch = reference(0)
    detected = Counter((d[1], d[2], d[3], d[4]) for d in one_batch.discrepancies)
    assert {row[:3] for row in detected} == program.expected
    assert detected == program.expected_rows  # a returned refund's refund_due twice: resolved, then open
    assert_exact(program, fold_in_batches(program_records(0), 10**6))


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_a_year_of_the_demo_program_is_exact_for_several_seeds(seed: int) -> None:
    """300 subscribers over 12 months: every finding, the status it ends in, its amounts, every
    member-month to the cent, every FSA claim's decision."""
    program = generate(members=300, months=12, seed=seed)
    feed = Feed()
    records = [r for _, events in program.phases for r in feed.records(*events)]
    verdict = assert_exact(program, fold_in_batches(records, 2_000, derived_first=seed % 2 == 0))
    assert all(verdict.claims_by_decision[d] > 0 for d in CLAIM_DECISIONS)


@pytest.mark.parametrize("seed", [1, 6])
def test_a_year_of_the_demo_program_priced_by_days_is_exact(seed: int) -> None:
    """The demo's --proration daily: the program's bills and the oracle price each coverage by its days
    in the month (mid-month hires, terminations, tier changes, and a termination within a billed month
    reported after it), and the ledger folds with the same plan setting."""
    plan = PlanSettings(proration="daily")
    program = generate(members=300, months=12, seed=seed, plan=plan)
    feed = Feed()
    records = [r for _, events in program.phases for r in feed.records(*events)]
    assert_exact(program, fold_in_batches(records, 2_000, plan=plan))
    within = mid_month_retro_months(program)
    assert within and within <= {(a, m) for k, a, m in program.expected if k == "retroactive_change"}


def mid_month_retro_months(program: Program) -> set[tuple[str, date]]:
    """(account, month) of the retroactive changes that end the coverage on a day within a billed month."""
    from events.types import EnrollmentChanged

    by_id = {e.event_id: e for _, evs in program.phases for e in evs}
    out = set()
    for (account, month), event_id in program.retro_changes.items():
        first = by_id[event_id]
        assert isinstance(first, EnrollmentChanged)
        end = first.benefit_end
        if first.action == "terminate" and end is not None and end.replace(day=1) == month and (
                end + timedelta(days=1)).day != 1:
            out.add((account, month))
    return out


def test_under_whole_months_a_termination_within_a_billed_month_changes_nothing() -> None:
    """The same kind of late termination, priced by whole months: the month was owed in full, so it is
    no retroactive change (and the oracle expects none: the fold agrees)."""
    program = generate(members=300, months=12, seed=6)
    daily = generate(members=300, months=12, seed=6, plan=PlanSettings(proration="daily"))
    within = mid_month_retro_months(daily)
    assert within and not within & {(a, m) for k, a, m in program.expected if k == "retroactive_change"}
    feed = Feed()
    assert_exact(program, fold_in_batches([r for _, evs in program.phases for r in feed.records(*evs)], 2_000))


def test_retroactive_changes_state_the_premium_before_the_change_as_a_whole_and_the_refund() -> None:
    """An 834 that ends several coverages (or changes the tier of every line) is one change: each moved
    month states the premium before its first event and the refund or bill of the change as a whole."""
    program = generate(members=300, months=12, seed=1)
    feed = Feed()
    store = fold_in_batches([r for _, evs in program.phases for r in feed.records(*evs)], 2_000)
    assert_exact(program, store)  # the retroactive_change rows' before, after and refund or bill included
    from events.types import EnrollmentChanged

    events = [e for _, evs in program.phases for e in evs]
    by_id = {e.event_id: e for e in events}
    files = Counter((e.account_id, e.occurred_at) for e in events
                    if isinstance(e, EnrollmentChanged) and e.relationship == "self")
    retro_rows = [r for r in program.expected_rows if r[0] == "retroactive_change"]
    assert retro_rows and any(files[(a, by_id[e].occurred_at)] > 1 for (a, _), e in program.retro_changes.items())


def test_the_comparison_notices_a_wrong_decision_a_wrong_status_and_an_unexpected_row() -> None:
    """The demo's check is not vacuous: the pure fold judged against a program altered three ways."""
    program = generate(members=30, months=4, seed=0)
    store = fold_in_batches(program_records(0), 10**6)
    claim_id, claim = next((k, c) for k, c in sorted(program.claims.items()) if c.decision == "partially_approved")
    program.claims[claim_id] = replace(claim, adjudications=(("approved", claim.requested_cents, 0),))
    returned = next(r for r in program.expected_rows if r[0] == "refund_due" and r[3] == "open"
                    and program.expected_rows[(*r[:3], "resolved")])
    program.expected_rows[returned] -= 1
    program.expected_rows[(*returned[:3], "resolved")] += 1  # as if the returned refund did not reopen it
    resolved = next(r for r in program.expected_rows if r[0] == "unmatched_payment" and r[3] == "resolved")
    del program.expected_rows[resolved]  # as if the cash application's payment were not expected
    verdict = judge_pure(program, store)
    assert (verdict.missed, verdict.spurious, verdict.status_mismatched, verdict.claims_mismatched) == (0, 1, 1, 1)


def test_the_oracle_notices_a_cent_off_in_a_finding_or_a_member_month_and_a_missing_row() -> None:
    """Amounts and balances are compared, not only kinds: rows altered by a cent, or dropped, are caught."""
    program = generate(members=30, months=4, seed=0)
    store = fold_in_batches(program_records(0), 10**6)
    adjudications = [decode_output(row.body) for _, row in store.outbox_pending(10**9) if row.stream == CLAIMS_STREAM]
    rows, months = store.discrepancies(limit=10**9), store.member_months(limit=10**9)
    clean = judge(program, rows, adjudications, months)  # type: ignore[arg-type]
    underpaid = next(i for i, r in enumerate(rows) if r.kind == "underpaid")
    rows[underpaid] = replace(rows[underpaid], actual_cents=rows[underpaid].actual_cents + 1)
    after = next(i for i, r in enumerate(rows) if r.kind == "paid_after_termination")
    rows[after] = replace(rows[after], action="refund $0.01 to AG-001")  # right cents, a stale action
    paid = next(i for i, m in enumerate(months) if m.paid_cents > 0)
    months[paid] = msgspec.structs.replace(months[paid], paid_cents=months[paid].paid_cents - 1)
    del months[-1]
    verdict = judge(program, rows, adjudications, months)  # type: ignore[arg-type]
    assert verdict.amounts_mismatched == clean.amounts_mismatched + 2
    assert verdict.amounts_mismatched_by_kind["underpaid"] == verdict.amounts_mismatched_by_kind[
        "paid_after_termination"] == 1
    assert verdict.balances_mismatched == clean.balances_mismatched + 2 == 2
    assert any("paid" in x for x in verdict.balance_examples) and any("no member_month row" in x
                                                                     for x in verdict.balance_examples)


def test_the_oracle_expects_the_premium_billed_before_a_retroactive_change_and_every_kind_of_change() -> None:
    """The program's retroactive changes: a whole termination, an 834 ending health and vision (settled by
    credits and a refund, or left open), a tier change on every line, each reaching back into months
    that were billed right; the oracle's premium before is what was billed."""
    from events.types import AdjustmentPosted, EnrollmentChanged, PremiumBilled, RefundIssued
    from processor.entrypoints.demo import expected_books

    program = generate(members=300, months=12, seed=3)
    events = [e for _, evs in program.phases for e in evs]
    by_id = {e.event_id: e for e in events}
    billed = Counter[tuple[str, date]]()
    for e in events:
        if isinstance(e, PremiumBilled):
            billed[(e.account_id, e.coverage_month)] += e.amount_cents
    books = expected_books(program)
    retro = [(row, a) for row, amounts in books.rows.items() if row[0] == "retroactive_change" for a in amounts]
    assert retro and len(retro) == sum(n for r, n in program.expected_rows.items() if r[0] == "retroactive_change")
    for (_, account, month, _), a in retro:
        assert month is not None and a.before_cents == billed[(account, month)] != a.after_cents
    changes: dict[str, set[str]] = {}
    for (account, _month), event_id in program.retro_changes.items():
        first = by_id[event_id]
        assert isinstance(first, EnrollmentChanged)
        lines = {e.coverage_line for e in events if isinstance(e, EnrollmentChanged) and e.account_id == account
                 and e.relationship == "self" and e.occurred_at == first.occurred_at}
        changes.setdefault(first.action, set()).add(",".join(sorted(lines)))
    assert "health,vision" in changes["terminate"]  # several coverages of one member at once, not all
    assert any(len(lines.split(",")) >= 2 for lines in changes["change"])
    reach = Counter(a for a, _ in program.retro_changes)
    assert max(reach.values()) >= 2  # one change reaching back into two billed months
    credits = [e for e in events if isinstance(e, AdjustmentPosted)]
    refunds = {e.coverage_month for e in events if isinstance(e, RefundIssued) and e.refund_id.endswith("-retro")}
    assert credits and {e.coverage_month for e in credits} == refunds
    assert all(program.expected_rows[("retroactive_change", e.account_id, e.coverage_month, "resolved")] == 1
               and program.expected_rows[("overpaid", e.account_id, e.coverage_month, "resolved")] == 1
               for e in credits)


# -- (b) balance identity on one account ---------------------------------------------------------

MONTHS = [JAN, date(2026, 2, 1), date(2026, 3, 1)]
PAYERS = ["AG-1", "AG-2"]

op_bill = st.tuples(st.just("bill"), st.sampled_from(MONTHS), st.integers(0, 100_000))
op_pay = st.tuples(
    st.just("pay"), st.sampled_from([*MONTHS, None]), st.integers(1, 100_000),
    st.sampled_from([None, "T1", "T2"]), st.sampled_from(PAYERS),
)
op_adj = st.tuples(st.just("adj"), st.sampled_from(MONTHS), st.integers(-50_000, 50_000))
op_rev = st.tuples(st.just("rev"), st.integers(0, 30))
OPS = st.lists(st.one_of(op_bill, op_pay, op_adj, op_rev), max_size=40)


@dataclass
class ModelPayment:
    payment_id: str
    month: date | None
    amount: int
    trace: str | None
    payer: str
    status: str  # applied | held | duplicate | reversed


@settings(max_examples=150, deadline=None)
@given(ops=OPS, enrolled=st.booleans())
def test_balance_is_billed_plus_adjustments_minus_paid_and_unapplied_cash_matches_its_lines(
    ops: list[tuple[Any, ...]], enrolled: bool
) -> None:
    led = Ledger()
    if enrolled:
        led.apply(enroll())
    billed: dict[date, int] = {}
    adjusted: dict[date, int] = {}
    payments: list[ModelPayment] = []
    for n, op in enumerate(ops):
        if op[0] == "bill":
            _, month, amount = op
            led.apply(bill(amount, month=month, event_id=f"b{n}"))
            billed[month] = billed.get(month, 0) + amount
            for p in payments:
                if p.month == month and p.status == "held":
                    p.status = "applied"
        elif op[0] == "pay":
            _, month, amount, trace, payer = op
            led.apply(pay(amount, month=month, event_id=f"p{n}", payment_id=f"P{n}", trace=trace,
                          payer=payer))
            dup = trace is not None and month is not None and any(
                q.month == month and q.trace == trace and q.status != "reversed" for q in payments)
            status = "duplicate" if dup else "applied" if month in billed else "held"
            payments.append(ModelPayment(f"P{n}", month, amount, trace, payer, status))
        elif op[0] == "adj":
            _, month, amount = op
            led.apply(adjust(amount, month=month, event_id=f"a{n}"))
            adjusted[month] = adjusted.get(month, 0) + amount
        else:
            target = payments[op[1] % len(payments)] if payments and op[1] < 25 else None
            pid = target.payment_id if target else "P-unknown"
            try:
                led.apply(reverse(pid, event_id=f"r{n}"))
            except Rejected:
                assert target is None or target.status == "reversed"
            else:
                assert target is not None and target.status != "reversed"
                target.status = "reversed"

    account = led.account()
    for month in MONTHS:
        state = account.months.get(month.isoformat())
        paid = sum(p.amount for p in payments if p.month == month and p.status == "applied")
        if state is None:
            assert billed.get(month, 0) == adjusted.get(month, 0) == paid == 0
            continue
        assert state.billed_cents == billed.get(month, 0)
        assert state.adjusted_cents == adjusted.get(month, 0)
        assert state.paid_cents == paid
        assert state.balance_cents == state.billed_cents + state.adjusted_cents - state.paid_cents
        assert state.balance_cents == billed.get(month, 0) + adjusted.get(month, 0) - paid
    for row in month_rows(account):
        assert row.balance_cents == row.billed_cents + row.adjusted_cents - row.paid_cents
    lines = [p for m in account.months.values() for p in m.payments]
    for payer in PAYERS:
        from_lines = sum(p.amount_cents for p in lines
                         if p.payer_id == payer and p.status in UNAPPLIED_STATUSES)
        from_model = sum(p.amount for p in payments
                         if p.payer == payer and p.status in ("held", "duplicate"))
        assert led.unapplied.get(payer, 0) == from_lines == from_model
    assert {p.payment_id: p.status for p in lines} == {p.payment_id: p.status for p in payments}


# -- (c) the fold is total: only Rejected, and Rejected changes nothing -------------------------------

ACCOUNTS = [ACCOUNT, "M000002"]
PLANS = ["UMP-CLASSIC", "DELTA-PPO"]
TIERS = ["EMP", "FAM"]
DAYS = st.dates(min_value=date(2025, 12, 1), max_value=date(2026, 5, 31))
FIRSTS = st.sampled_from([date(2025, 12, 1), *MONTHS, date(2026, 4, 1)])


@st.composite
def events(draw: st.DrawFn, n: int) -> Event:
    kind = draw(st.sampled_from(["enroll", "rate", "bill", "pay", "rev", "adj", "day"]))
    eid = f"e{n}"
    acc = draw(st.sampled_from(ACCOUNTS))
    plan, tier = draw(st.sampled_from(PLANS)), draw(st.sampled_from(TIERS))
    if kind == "enroll":
        begin = draw(DAYS)
        end = draw(st.one_of(st.none(), st.integers(0, 120).map(lambda d: begin + timedelta(days=d))))
        return enroll(
            event_id=eid, account=acc, plan=plan, tier=tier, begin=begin, end=end,
            action=draw(st.sampled_from(["add", "change", "terminate", "reinstate"])),
            line="health" if plan == "UMP-CLASSIC" else "dental",
            member=draw(st.sampled_from([acc, f"{acc}-D1"])),
            relationship=draw(st.sampled_from(["self", "self", "child"])),
        )
    if kind == "rate":
        frm = draw(FIRSTS)
        through = draw(st.one_of(st.none(), st.just(frm + timedelta(days=58))))
        return rate(draw(st.integers(0, 300_000)), event_id=eid, plan=plan, tier=tier, month_from=frm,
                    month_through=through)
    if kind == "bill":
        month = draw(FIRSTS)
        return bill(draw(st.integers(0, 300_000)), event_id=eid, account=acc, plan=plan, tier=tier,
                    month=month, bill_id=f"B{draw(st.integers(0, 6))}",
                    due_on=month + timedelta(days=draw(st.integers(0, 20))),
                    agency=draw(st.sampled_from([None, "AG-1"])))
    if kind == "pay":
        return pay(draw(st.integers(1, 300_000)), event_id=eid, account=acc,
                   month=draw(st.one_of(st.none(), FIRSTS)), payment_id=f"P{draw(st.integers(0, 6))}",
                   trace=draw(st.sampled_from([None, "T1"])), payer=draw(st.sampled_from(["AG-1", acc])),
                   method=draw(st.sampled_from(["payroll", "direct"])))
    if kind == "rev":
        return reverse(f"P{draw(st.integers(0, 6))}", event_id=eid, account=acc)
    if kind == "adj":
        return adjust(draw(st.integers(-300_000, 300_000)), event_id=eid, account=acc, month=draw(FIRSTS),
                      adjustment_id=f"A{draw(st.integers(0, 4))}", plan=draw(st.sampled_from([None, *PLANS])))
    return day(draw(DAYS), event_id=eid)


@st.composite
def programs(draw: st.DrawFn) -> list[Event]:
    return [draw(events(n)) for n in range(draw(st.integers(0, 40)))]


def snapshot(led: Ledger) -> list[bytes]:
    from processor.state import encode_state

    return [encode_state(led.part), *(encode_state(led.accounts[a]) for a in sorted(led.accounts))]


@settings(max_examples=200, deadline=None)
@given(program=programs())
def test_fold_raises_nothing_but_rejected_and_a_rejection_changes_nothing(program: list[Event]) -> None:
    led = Ledger()
    for a in ACCOUNTS:
        led.account(a)
    opened_ids: set[str] = set()
    for event in program:
        try:
            valid = decode_input(encode(event))
        except EventDecodeError:
            assume(False)
            return
        before = snapshot(led)
        try:
            outs = led.apply(valid)
        except Rejected as exc:
            assert exc.reason
            assert snapshot(led) == before
            continue
        for out in outs:
            for ev in out.emitted:
                assert decode_output(encode(ev)) == ev
                if ev.event_id.endswith(":opened"):
                    assert ev.discrepancy_id not in opened_ids, "a discrepancy id was reused"
                    opened_ids.add(ev.discrepancy_id)
        for acc in led.accounts.values():
            for key, d in acc.open.items():
                assert d.key == key and d.kind == key.split("|", 1)[0]
                assert d.discrepancy_id in opened_ids
            for m in acc.months.values():
                assert m.balance_cents == m.billed_cents + m.adjusted_cents - m.paid_cents
        assert led.part.business_date is None or isinstance(led.part.business_date, date)
    assert BROADCAST_ACCOUNT not in led.accounts
