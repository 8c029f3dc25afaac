"""The scenario book: every *.yaml file here is a hand-worked case, run against the pure fold.

A scenario lists events in the order the ledger receives them and the books it must show afterwards:
month amounts, the discrepancies left open (exactly those), those resolved, unapplied cash, and the
events the fold refuses. Amounts are quoted decimal strings ("784.12") and become integer cents
exactly; a float in a scenario is an error, never rounded.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from events.types import (
    BROADCAST_ACCOUNT,
    AdjustmentPosted,
    BillingCycleClosed,
    CashApplied,
    DayClosed,
    DiscrepancyAmountChanged,
    DiscrepancyOpened,
    DiscrepancySuperseded,
    EnrollmentChanged,
    FsaClaimAdjudicated,
    FsaClaimSubmitted,
    FsaContributionReceived,
    FsaElectionMade,
    InputEvent,
    PaymentReceived,
    PaymentReversed,
    PremiumBilled,
    RatePublished,
    RefundIssued,
    RefundReturned,
    RemittanceReceived,
)
from processor.rules.base import Rejected
from processor.rules.dates import last_day
from processor.rules.fold import fold_event
from processor.settings import PlanSettings
from processor.state import AccountState, PartitionState, month_key
from projections.model import FsaRow, fsa_rows

HERE = Path(__file__).parent
SCENARIOS = sorted(HERE.glob("*.yaml"))
T0 = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
DEFAULT_ACCOUNT = "A1"
DEFAULT_AGENCY = "AG-1"


class ScenarioError(ValueError):
    """The scenario file itself is wrong; names the file and the entry."""


def cents(value: Any, where: str) -> int:
    if isinstance(value, bool) or isinstance(value, float):
        raise ScenarioError(f"{where}: write amounts as quoted strings like \"784.12\", not {value!r}")
    amount = Decimal(str(value))
    if amount != amount.quantize(Decimal("0.01")):
        raise ScenarioError(f"{where}: {value!r} has fractions of a cent")
    return int(amount * 100)


def month(value: Any, where: str) -> date:
    if isinstance(value, date):
        return value.replace(day=1)
    text = str(value)
    try:
        year, mon = text.split("-")[:2]
        return date(int(year), int(mon), 1)
    except ValueError as exc:
        raise ScenarioError(f"{where}: {value!r} is not a month (YYYY-MM)") from exc


def day(value: Any, where: str) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError as exc:
        raise ScenarioError(f"{where}: {value!r} is not a date (YYYY-MM-DD)") from exc


@dataclass
class Book:
    """The pure fold for one partition, as the processor runs it."""

    plan: PlanSettings
    part: PartitionState = field(default_factory=lambda: PartitionState(partition=0))
    accounts: dict[str, AccountState] = field(default_factory=dict)
    opened: list[tuple[str, str, str]] = field(default_factory=list)  # (account, kind, discrepancy id)
    resolved: list[tuple[str, str, str]] = field(default_factory=list)
    changed: list[tuple[str, str, int, int]] = field(default_factory=list)  # kind, actual before and after
    superseded: list[tuple[str, str, str]] = field(default_factory=list)
    unapplied: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)  # event id -> reason
    claims: dict[str, FsaClaimAdjudicated] = field(default_factory=dict)  # claim id -> adjudication

    def fsa_rows(self, account_id: str) -> list[FsaRow]:
        return fsa_rows(self.account(account_id))

    def account(self, account_id: str) -> AccountState:
        if account_id not in self.accounts:
            self.accounts[account_id] = AccountState(account_id=account_id, partition=0)
        return self.accounts[account_id]

    def apply(self, event: InputEvent) -> None:
        try:
            reached = fold_event(event, self.part, self.plan, self.account, lambda: list(self.accounts.values()))
            outcomes = [out for _, out in reached]
        except Rejected as exc:
            self.rejected[event.event_id] = exc.reason
            return
        for out in outcomes:
            for e in out.emitted:
                if isinstance(e, DiscrepancyOpened):
                    self.opened.append((e.account_id, e.kind, e.discrepancy_id))
                elif isinstance(e, DiscrepancyAmountChanged):
                    self.changed.append((e.account_id, e.kind, e.previous_actual_cents, e.actual_cents))
                elif isinstance(e, DiscrepancySuperseded):
                    self.superseded.append((e.account_id, e.kind, e.discrepancy_id))
                elif isinstance(e, FsaClaimAdjudicated):
                    self.claims[e.claim_id] = e
                else:
                    self.resolved.append((e.account_id, e.kind, e.discrepancy_id))
            for payer, delta in out.payer_unapplied_delta.items():
                self.unapplied[payer] = self.unapplied.get(payer, 0) + delta
        for out in outcomes:
            for derived in out.derived:  # what the relay publishes back to the payments topic
                self.apply(derived)


def build_event(entry: dict[str, Any], n: int, where: str) -> InputEvent:
    if len(entry) != 1:
        raise ScenarioError(f"{where}: one event type per entry, got {sorted(entry)}")
    kind, raw = next(iter(entry.items()))
    if not isinstance(raw, dict):
        raw = {"date": raw} if kind in ("day", "cycle") else {}
    f = dict(raw)
    event_id = str(f.pop("id", f"e{n}"))
    account = str(f.pop("account", DEFAULT_ACCOUNT))
    agency = str(f.pop("agency", DEFAULT_AGENCY))
    at = f.pop("at", None)  # when the upstream system made the change (default: the book's start)
    occurred = T0 if at is None else datetime.combine(day(at, where), T0.timetz())
    common = {"event_id": event_id, "occurred_at": occurred, "source": "scenario"}
    w = f"{where} ({kind})"
    if kind == "rate":
        first = month(f.pop("from"), w)
        through = f.pop("through", None)
        total = cents(f.pop("total"), w)
        employee = cents(f.pop("employee", "0.00"), w)
        event: InputEvent = RatePublished(
            **common, account_id=BROADCAST_ACCOUNT, effective_on=first, rate_id=f.pop("rate_id", event_id),
            plan=str(f.pop("plan")), tier=str(f.pop("tier")), month_from=first,
            month_through=last_day(month(through, w)) if through is not None else None,
            total_cents=total, employee_cents=employee, employer_cents=total - employee,
        )
    elif kind in ("enroll", "change", "terminate", "reinstate"):
        action = {"enroll": "add"}.get(kind, kind)
        begin = day(f.pop("begin"), w)
        end = f.pop("end", None)
        event = EnrollmentChanged(
            **common, account_id=account, effective_on=day(f.pop("effective", begin), w),
            member_id=str(f.pop("member", account)), relationship=f.pop("relationship", "self"),
            plan=str(f.pop("plan")), coverage_line=f.pop("line", "health"), tier=str(f.pop("tier", "EMP")),
            action=action, status=f.pop("status", "active"), benefit_begin=begin,  # type: ignore[arg-type]
            benefit_end=day(end, w) if end is not None else None, agency_id=agency,
            elected_on=day(f.pop("elected_on"), w) if "elected_on" in f else None,
            cobra_start=month(f.pop("cobra_start"), w) if "cobra_start" in f else None,
            disability_extension=bool(f.pop("disability_extension", False)),
            tax_dependent=bool(f.pop("tax_dependent", True)),
            reason=str(f.pop("reason")) if "reason" in f else None,
            coverage_amount_cents=cents(f.pop("coverage_amount"), w) if "coverage_amount" in f else None,
            birth_year=int(f.pop("birth_year")) if "birth_year" in f else None,
            birth_date=day(f.pop("birth_date"), w) if "birth_date" in f else None,
            qualifying_event=f.pop("qualifying_event", None),
            qualifying_event_on=day(f.pop("qualifying_event_on"), w) if "qualifying_event_on" in f else None,
        )
    elif kind == "bill":
        m = month(f.pop("month"), w)
        event = PremiumBilled(
            **common, account_id=account, effective_on=m, bill_id=str(f.pop("bill", f"B-{event_id}")),
            coverage_month=m, plan=str(f.pop("plan")), tier=str(f.pop("tier", "EMP")),
            amount_cents=cents(f.pop("amount"), w), due_on=day(f.pop("due", m), w),
            agency_id=None if f.pop("direct", False) else agency,
        )
    elif kind == "pay":
        m_raw = f.pop("month", None)
        m = month(m_raw, w) if m_raw is not None else None
        event = PaymentReceived(
            **common, account_id=account, effective_on=day(f.pop("on", m or date(2026, 1, 1)), w),
            payment_id=str(f.pop("payment", f"P-{event_id}")), coverage_month=m,
            amount_cents=cents(f.pop("amount"), w), method=f.pop("method", "payroll"),
            payer_id=str(f.pop("payer", agency)), remittance_id=f.pop("remittance", None),
            trace_number=f.pop("trace", None), tax_treatment=f.pop("tax", None),
            pay_frequency=f.pop("frequency", None), plan=f.pop("plan", None), coverage_line=f.pop("line", None),
            advice_only=bool(f.pop("advice_only", False)),
        )
    elif kind == "reverse":
        event = PaymentReversed(
            **common, account_id=account, effective_on=day(f.pop("on", date(2026, 1, 1)), w),
            payment_id=str(f.pop("payment")), reason=str(f.pop("reason", "returned")),
        )
    elif kind == "refund":
        m_raw = f.pop("month", None)
        event = RefundIssued(
            **common, account_id=account, effective_on=day(f.pop("on", date(2026, 1, 1)), w),
            refund_id=str(f.pop("refund", f"RF-{event_id}")), payee_id=str(f.pop("payee", agency)),
            amount_cents=cents(f.pop("amount"), w), method=f.pop("method", "check"),
            reason=str(f.pop("reason", "refund")), payment_id=f.pop("payment", None),
            coverage_month=month(m_raw, w) if m_raw is not None else None,
        )
    elif kind == "refund_returned":
        event = RefundReturned(
            **common, account_id=account, effective_on=day(f.pop("effective", date(2026, 1, 1)), w),
            refund_id=str(f.pop("refund")), reason=str(f.pop("reason", "check returned")),
        )
    elif kind == "apply":
        event = CashApplied(
            **common, account_id=account, effective_on=day(f.pop("effective", date(2026, 1, 1)), w),
            application_id=str(f.pop("application", f"CA-{event_id}")), payment_id=str(f.pop("payment")),
            to_account_id=str(f.pop("to_account", account)), to_coverage_month=month(f.pop("to_month"), w),
            amount_cents=cents(f.pop("amount"), w), reason=str(f.pop("reason", "research")),
        )
    elif kind == "adjust":
        m = month(f.pop("month"), w)
        event = AdjustmentPosted(
            **common, account_id=account, effective_on=m, adjustment_id=str(f.pop("adjustment", f"J-{event_id}")),
            coverage_month=m, amount_cents=cents(f.pop("amount"), w), reason=str(f.pop("reason", "correction")),
            plan=f.pop("plan", None),
        )
    elif kind == "remit":
        paid_on = day(f.pop("paid"), w)
        payer = str(f.pop("payer", agency))
        event = RemittanceReceived(
            **common, account_id=f"payer:{payer}", effective_on=paid_on, remittance_id=str(f.pop("remittance")),
            payer_id=payer, payee_id=None, method=f.pop("method", "ach"), payment_date=paid_on,
            trace_number=str(f.pop("trace")), total_cents=cents(f.pop("total"), w),
            lines_total_cents=cents(f.pop("lines_total"), w), line_count=int(f.pop("lines")),
            advice_only=bool(f.pop("advice_only", False)),
        )
    elif kind == "cycle":
        m = month(f.pop("date"), w)
        event = BillingCycleClosed(**common, account_id=BROADCAST_ACCOUNT, effective_on=m, cycle_month=m)
    elif kind == "day":
        d = day(f.pop("date"), w)
        event = DayClosed(**common, account_id=BROADCAST_ACCOUNT, effective_on=d, business_date=d)
    elif kind == "elect":
        year = int(f.pop("year"))
        event = FsaElectionMade(
            **common, account_id=account, effective_on=day(f.pop("effective", date(year, 1, 1)), w),
            election_id=str(f.pop("election", f"EL-{event_id}")), member_id=str(f.pop("member", account)),
            plan_year=year, account_type=f.pop("type", "health"), election_cents=cents(f.pop("amount"), w),
            tax_filing_status=f.pop("filing", None),
        )
    elif kind == "contribute":
        event = FsaContributionReceived(
            **common, account_id=account, effective_on=day(f.pop("paid"), w),
            contribution_id=str(f.pop("contribution", f"FC-{event_id}")), plan_year=int(f.pop("year")),
            account_type=f.pop("type", "dependent_care"), amount_cents=cents(f.pop("amount"), w),
            payer_id=str(f.pop("payer", agency)),
        )
    elif kind == "claim":
        service = day(f.pop("service"), w)
        year_raw = f.pop("year", None)
        event = FsaClaimSubmitted(
            **common, account_id=account, effective_on=day(f.pop("submitted", service), w),
            claim_id=str(f.pop("claim", event_id)), account_type=f.pop("type", "health"), service_date=service,
            amount_cents=cents(f.pop("amount"), w), plan_year=None if year_raw is None else int(year_raw),
            description=str(f.pop("description", "")),
        )
    else:
        raise ScenarioError(f"{where}: unknown event type {kind!r}")
    if f:
        raise ScenarioError(f"{w}: unknown fields {sorted(f)}")
    return event


def load(path: Path) -> tuple[dict[str, Any], list[InputEvent]]:
    """The scenario file and its events, in the order the ledger receives them."""
    spec = yaml.safe_load(path.read_text())
    for required in ("title", "events", "expect"):
        if required not in spec:
            raise ScenarioError(f"{path.name}: missing {required!r}")
    counter = itertools.count(1)
    events = [build_event(entry, next(counter), f"{path.name} event {i}")
              for i, entry in enumerate(spec["events"], start=1)]
    return spec, events


def run(path: Path) -> tuple[dict[str, Any], Book]:
    spec, events = load(path)
    book = Book(plan=PlanSettings(**spec.get("plan", {})))
    for event in events:
        book.apply(event)
    return spec, book


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario(path: Path) -> None:
    spec, book = run(path)
    check(spec, book, path.name)


def check(spec: dict[str, Any], book: Any, where: str) -> None:
    """The scenario's expectations against a book: the pure fold's Book, or a view of the same books
    read back from a real ledger (tests/integration/test_scenarios_e2e.py) with the same attributes."""
    expect = spec["expect"]

    per_account = {DEFAULT_ACCOUNT: expect.get("months", {})}
    per_account.update({str(a): v.get("months", {}) for a, v in expect.get("accounts", {}).items()})
    for account_id, months in per_account.items():
        state = book.account(account_id)
        for m_raw, fields in months.items():
            m = month(m_raw, f"{where} expect.months")
            got = state.months.get(month_key(m))
            assert got is not None, f"{where}: no month {m:%Y-%m} on {account_id}"
            actual = {
                "billed": got.billed_cents, "adjusted": got.adjusted_cents, "paid": got.paid_cents,
                "unapplied": got.unapplied_cents, "balance": got.balance_cents, "expected": got.expected_cents,
                "refunded": got.refunded_cents, "post_tax": got.post_tax_cents, "imputed": got.imputed_income_cents,
                "employee": got.employee_share_cents, "employer": got.employer_share_cents,
            }
            for name, want in fields.items():
                if name not in actual:
                    raise ScenarioError(f"{where}: unknown month field {name!r}")
                wanted = None if want is None else cents(want, f"{where} expect.months.{m_raw}.{name}")
                assert actual[name] == wanted, f"{where}: {account_id} {m:%Y-%m} {name}: {actual[name]} != {wanted}"

    open_now = sorted(
        (d.kind, a, d.coverage_month, d.expected_cents, d.actual_cents, d.actor)
        for a, st in book.accounts.items() for d in st.open.values()
    )
    wanted_open = sorted(
        (o["kind"], str(o.get("account", DEFAULT_ACCOUNT)),
         month(o["month"], where) if o.get("month") is not None else None,
         cents(o["expected"], where), cents(o["actual"], where),
         o.get("actor", _actor_of(open_now, o["kind"])))
        for o in expect.get("open", [])
    )
    assert open_now == wanted_open, f"{where}: open discrepancies differ"

    if "resolved" in expect:
        assert sorted(k for _, k, _ in book.resolved) == sorted(expect["resolved"]), f"{where}: resolved differ"
    if "superseded" in expect:
        assert sorted(k for _, k, _ in book.superseded) == sorted(expect["superseded"]), f"{where}: superseded"
    for note in expect.get("notes", []):
        texts = [f"{d.explanation} | {d.action}" for st in book.accounts.values() for d in st.open.values()
                 if d.kind == note["kind"]]
        assert any(note["contains"] in t for t in texts), f"{where}: no open {note['kind']} says {note['contains']!r}"
    if "opened" in expect:
        assert sorted(k for _, k, _ in book.opened) == sorted(expect["opened"]), f"{where}: ever opened differ"
    if "changed" in expect:
        wanted_changes = [(c["kind"], cents(c["from"], where), cents(c["to"], where)) for c in expect["changed"]]
        assert [(k, a, b) for _, k, a, b in book.changed] == wanted_changes, f"{where}: amount changes differ"
    wanted_cash = {p: cents(v, where) for p, v in expect.get("unapplied", {}).items()}
    assert {p: v for p, v in book.unapplied.items() if v} == wanted_cash, f"{where}: unapplied cash differs"
    rejected = expect.get("rejected", {})
    assert sorted(book.rejected) == sorted(rejected), f"{where}: rejected events differ: {book.rejected}"
    for event_id, phrase in rejected.items():
        assert phrase in book.rejected[event_id], f"{where}: {event_id} rejected for {book.rejected[event_id]!r}"
    for causes in expect.get("causes", []):
        d = next(d for st in book.accounts.values() for d in st.open.values() if d.kind == causes["kind"])
        assert set(causes.get("include", [])) <= set(d.cause_event_ids), f"{where}: causes {d.cause_event_ids}"
        assert not set(causes.get("exclude", [])) & set(d.cause_event_ids), f"{where}: causes {d.cause_event_ids}"
    _check_fsa(expect, book, where)


def _check_fsa(expect: dict[str, Any], book: Book, where: str) -> None:
    """``claims``: every adjudicated claim, exactly; ``fsa``: balances of the FSA accounts named."""
    wanted_claims = {str(c["claim"]): c for c in expect.get("claims", [])}
    assert sorted(book.claims) == sorted(wanted_claims), f"{where}: adjudicated claims differ: {sorted(book.claims)}"
    for claim_id, c in wanted_claims.items():
        got = book.claims[claim_id]
        w = f"{where} claims.{claim_id}"
        assert got.decision == c["decision"], f"{w}: decision {got.decision} ({got.reason})"
        assert got.approved_cents == cents(c["approved"], w), f"{w}: approved {got.approved_cents} ({got.reason})"
        if "year" in c:
            assert got.plan_year == int(c["year"]), f"{w}: plan year {got.plan_year}"
        if "reason_contains" in c:
            assert c["reason_contains"] in got.reason, f"{w}: reason {got.reason!r}"
        if "available_after" in c:
            assert got.available_after_cents == cents(c["available_after"], w), f"{w}: {got.available_after_cents}"
        if "pending" in c:
            assert got.pending_cents == cents(c["pending"], w), f"{w}: pending {got.pending_cents} ({got.reason})"
    for entry in expect.get("fsa", []):
        account_id = str(entry.get("account", DEFAULT_ACCOUNT))
        rows = {(r.plan_year, r.account_type): r for r in book.fsa_rows(account_id)}
        key = (int(entry["year"]), str(entry.get("type", "health")))
        w = f"{where} fsa {account_id} {key}"
        assert key in rows, f"{w}: no such FSA account; have {sorted(rows)}"
        row = rows[key]
        for name, want in entry.items():
            if name in ("account", "year", "type"):
                continue
            if name == "closed":
                assert row.closed is bool(want), f"{w}: closed {row.closed}"
                continue
            column = f"{name}_cents"
            if not hasattr(row, column):
                raise ScenarioError(f"{w}: unknown fsa field {name!r}")
            assert getattr(row, column) == cents(want, w), f"{w}: {name} {getattr(row, column)}"


def _actor_of(open_now: list[tuple[Any, ...]], kind: str) -> str:
    """When a scenario does not say who acts, accept the fold's answer for that kind."""
    return next((row[5] for row in open_now if row[0] == kind), "?")


def test_the_scenario_book_has_scenarios_and_each_names_what_it_covers() -> None:
    assert len(SCENARIOS) >= 20
    for path in SCENARIOS:
        spec = yaml.safe_load(path.read_text())
        assert spec.get("covers"), f"{path.name}: say which rules it covers"


def test_a_float_amount_in_a_scenario_is_an_error_not_rounded() -> None:
    with pytest.raises(ScenarioError, match="quoted strings"):
        cents(784.12, "x.yaml")
    with pytest.raises(ScenarioError, match="fractions of a cent"):
        cents("784.125", "x.yaml")
