"""Properties: batch-size independence (replay == live in miniature), the balance identity, a total fold."""

from __future__ import annotations

from dataclasses import astuple, dataclass
from datetime import date, timedelta
from functools import cache
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from events.codec import EventDecodeError, decode_input, decode_output, encode
from events.types import BROADCAST_ACCOUNT, Event
from processor.batch import BatchProcessor, Record, partition_for
from processor.demo import INJECTED_KINDS, generate
from processor.fold import Rejected
from processor.settings import PlanSettings
from processor.state import UNAPPLIED_STATUSES
from projections.memory import MemoryStore
from projections.model import month_rows
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


def test_every_generated_event_is_a_valid_input_event() -> None:
    program = generate(members=30, months=4, seed=3)
    for _, events in program.phases:
        for e in events:
            assert decode_input(encode(e)) == e


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


def fold_in_batches(records: list[Record], size: int, *, restart: bool = False) -> MemoryStore:
    store = MemoryStore()

    def fresh() -> BatchProcessor:
        return BatchProcessor(store, log_id=LOG, plan=PlanSettings(), topics=TOPICS, partitions=PARTITIONS,
                              clock=lambda: NOW)

    proc = fresh()
    for start in range(0, len(records), size):
        if restart:
            proc = fresh()  # a worker restart between batches: cold cache, state from the store
        result = proc.process(records[start:start + size])
        store.commit_batch(result.write)
        proc.committed(result)
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
            months.extend(astuple(m) for m in bal.months)
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
    return records, books(fold_in_batches(records, len(records)), accounts_of(records))


SEEDS = st.integers(min_value=0, max_value=7)  # a few programs, each generated and folded once


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=SEEDS, size=st.integers(min_value=1, max_value=500))
def test_folding_in_batches_of_any_size_gives_the_same_books_as_one_batch(seed: int, size: int) -> None:
    records, one_batch = reference(seed)
    assert books(fold_in_batches(records, size), accounts_of(records)) == one_batch


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=SEEDS, size=st.integers(min_value=1, max_value=500))
def test_restarting_the_worker_between_batches_gives_the_same_books(seed: int, size: int) -> None:
    records, one_batch = reference(seed)
    assert books(fold_in_batches(records, size, restart=True), accounts_of(records)) == one_batch


def test_one_batch_size_one_run_is_identical_to_one_big_batch() -> None:
    records, one_batch = reference(0)
    assert books(fold_in_batches(records, 1), accounts_of(records)) == one_batch
    assert one_batch.counts[0] == len(records)


def test_the_demo_program_finds_exactly_the_injected_discrepancies() -> None:
    program = generate(members=30, months=4, seed=0)
    _, one_batch = reference(0)
    detected = {(d[1], d[2], d[3]) for d in one_batch.discrepancies}
    assert detected == program.expected
    assert len(one_batch.discrepancies) == len(detected)


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
