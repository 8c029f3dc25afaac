"""The oracle: what the ledger must show, to the cent, and the comparison with what it shows.

``expected_books`` replays the program through the demo's own model (model.py) in the order the
ledger folds it: the amounts of every expected discrepancy row (a row left open: as the books end; a
row closed by a later event: as the month stood just before that event), the premium before and after
each retroactive change, the figures of every member-month and every payer's unapplied cash. ``judge``
compares them, and the FSA adjudications the generator expects (each claim's decision, and every later
payment of a pending remainder), with what the ledger recorded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import date
from typing import Protocol

from events.money import format_cents as money
from events.types import FsaClaimAdjudicated
from processor.entrypoints.demo.model import Model, MonthFigures
from processor.entrypoints.demo.records import CLAIM_DECISIONS, ExpectedRow, Program

EXAMPLES_MAX = 10  # examples of each kind of mismatch in the report


class SeenDiscrepancy(Protocol):
    """A discrepancy row as the ledger's store returns it (projections' DiscrepancyRow)."""

    @property
    def kind(self) -> str: ...
    @property
    def account_id(self) -> str: ...
    @property
    def coverage_month(self) -> date | None: ...
    @property
    def status(self) -> str: ...
    @property
    def expected_cents(self) -> int: ...
    @property
    def actual_cents(self) -> int: ...
    @property
    def explanation(self) -> str: ...
    @property
    def action(self) -> str: ...


class SeenMonth(Protocol):
    """A member_month row as the ledger's store returns it (projections' MonthRow)."""

    @property
    def account_id(self) -> str: ...
    @property
    def coverage_month(self) -> date: ...
    @property
    def expected_cents(self) -> int | None: ...
    @property
    def billed_cents(self) -> int: ...
    @property
    def adjusted_cents(self) -> int: ...
    @property
    def paid_cents(self) -> int: ...
    @property
    def unapplied_cents(self) -> int: ...
    @property
    def refunded_cents(self) -> int: ...
    @property
    def balance_cents(self) -> int: ...


@dataclass(frozen=True)
class RowAmounts:
    expected_cents: int
    actual_cents: int
    # a retroactive change: the month's premium before the change as a whole, after it, and what is
    # billed (net of adjustments); the difference is the refund (positive) or the bill (negative)
    before_cents: int | None = None
    after_cents: int | None = None
    billed_cents: int | None = None

    def states(self) -> str:
        if self.before_cents is None or self.after_cents is None or self.billed_cents is None:
            return f"{self.expected_cents}/{self.actual_cents} cents"
        difference = self.billed_cents - self.after_cents
        return (f"{self.expected_cents}/{self.actual_cents} cents, the premium from {money(self.before_cents)} to"
                f" {money(self.after_cents)}, {'refund' if difference > 0 else 'bill'} {money(abs(difference))}")


@dataclass(frozen=True)
class ExpectedBooks:
    rows: dict[ExpectedRow, list[RowAmounts]]  # the amounts of each expected row, one entry per row
    months: dict[tuple[str, date], MonthFigures]
    unapplied: dict[str, int] = field(default_factory=dict)  # payer -> unapplied cash (non-zero only)


def expected_books(program: Program) -> ExpectedBooks:
    """Replay the program through the model; see the module docstring."""
    model = Model(program.plan)
    closing: dict[str, list[ExpectedRow]] = {}
    for row, closers in program.closed_by.items():
        for event_id in closers:
            closing.setdefault(event_id, []).append(row)
    changes: dict[str, list[tuple[str, date]]] = {}
    for key, event_id in program.retro_changes.items():
        changes.setdefault(event_id, []).append(key)
    before: dict[tuple[str, date], int | None] = {}

    def amounts(row: ExpectedRow) -> RowAmounts:
        kind, account, month, _ = row
        expected, actual = model.amounts(kind, account, month)
        if kind != "retroactive_change" or month is None:
            return RowAmounts(expected, actual)
        net = model.accounts[account].cells[month].net_billed
        return RowAmounts(expected, actual, before.get((account, month)), model.premium(account, month), net)

    rows: dict[ExpectedRow, list[RowAmounts]] = {}
    for _, events in program.phases:
        for event in events:
            for row in closing.get(event.event_id, ()):
                rows.setdefault(row, []).append(amounts(row))
            for key in changes.get(event.event_id, ()):
                before[key] = model.premium(*key)
            model.apply(event)
    for row, n in program.expected_rows.items():
        if row[3] == "open" and n > 0:
            rows[row] = [amounts(row)] * n
    return ExpectedBooks(rows, model.months(), model.unapplied())


# The amount a finding's action tells someone to refund, bill or notify, from its (expected, actual)
# cents (README, "Discrepancies"); it must follow the amounts when they move while the finding is open.
ACTION_AMOUNT = {
    "paid_after_termination": lambda expected, actual: actual,  # refund what was paid
    "refund_due": lambda expected, actual: actual - expected,  # refund what is not owed
    "enrolled_not_billed": lambda expected, actual: expected - actual,  # bill the premium
    "cobra_shortfall": lambda expected, actual: expected - actual,  # notice of the balance
    "refund_recovery": lambda expected, actual: actual - expected,  # recover what no credit covers
}


def states_amounts(kind: str, row: SeenDiscrepancy, want: RowAmounts) -> bool:
    """The explanation and action state the amounts: a retroactive change the premium before and after
    the change and the refund or bill that follows; the kinds of ACTION_AMOUNT the amount to act on."""
    named = ACTION_AMOUNT.get(kind)
    if named is not None:
        return money(named(want.expected_cents, want.actual_cents)) in row.action
    if want.before_cents is None or want.after_cents is None or want.billed_cents is None:
        return True
    difference = want.billed_cents - want.after_cents
    action = row.action.lower()
    direction = ("refund" in action or "credit" in action) if difference > 0 else "bill" in action
    return (f"from {money(want.before_cents)} to {money(want.after_cents)}" in row.explanation
            and money(abs(difference)) in row.action and direction)


@dataclass(frozen=True)
class Judgement:
    """What the ledger recorded, compared with what the program injected and what the oracle computed."""

    missed: int  # expected discrepancy rows (kind, account, month) not recorded
    spurious: int  # recorded rows not expected, a second row for a finding included
    status_mismatched: int  # rows recorded for the right finding that ended open / resolved where not expected
    claims_adjudicated: int  # claims of the program with an adjudication
    claims_by_decision: dict[str, int]  # by the decision when submitted
    # claims with no adjudication, or other adjudications than expected (decision, approved, pending, in order)
    claims_mismatched: int
    missed_examples: list[str]
    spurious_examples: list[str]
    mismatch_examples: list[str]
    amounts_checked: int = 0  # discrepancy rows whose amounts were compared
    amounts_mismatched: int = 0  # of those, rows stating other expected / actual cents (or retro amounts)
    amount_examples: list[str] = field(default_factory=list)
    amounts_mismatched_by_kind: dict[str, int] = field(default_factory=dict)
    months_checked: int = 0  # member-months compared
    balances_mismatched: int = 0  # member-months missing, unexpected, or with another figure than the oracle's
    balance_examples: list[str] = field(default_factory=list)
    claim_payments: int = 0  # later adjudications paying part of a pending dependent-care claim
    payers_checked: int = 0  # payers with unapplied cash, in the ledger's books or the oracle's
    unapplied_mismatched: int = 0  # of those, payers with other unapplied cash than the oracle's
    unapplied_examples: list[str] = field(default_factory=list)


def _text(t: tuple[object, ...]) -> str:
    return " ".join(map(str, t))


def _amounts(books: ExpectedBooks, rows: Sequence[SeenDiscrepancy]) -> tuple[int, Counter[str], list[str]]:
    seen: dict[ExpectedRow, list[SeenDiscrepancy]] = {}
    for r in rows:
        seen.setdefault((r.kind, r.account_id, r.coverage_month, r.status), []).append(r)
    checked = 0
    mismatched: Counter[str] = Counter()
    examples: list[str] = []
    for key in sorted(set(seen) & set(books.rows), key=str):
        got = sorted(seen[key], key=lambda r: (r.expected_cents, r.actual_cents))
        want = sorted(books.rows[key], key=lambda a: (a.expected_cents, a.actual_cents))
        for r, a in zip(got, want, strict=False):
            checked += 1
            if (r.expected_cents, r.actual_cents) == (a.expected_cents, a.actual_cents) and states_amounts(
                    key[0], r, a):
                continue
            mismatched[key[0]] += 1
            if len(examples) < EXAMPLES_MAX:
                examples.append(f"{_text(key)}: expected {a.states()}; recorded {r.expected_cents}/{r.actual_cents}"
                                f" cents, {r.explanation!r}, action {r.action!r}")
    return checked, mismatched, examples


MONTH_FIELDS = [f.name for f in fields(MonthFigures)]  # expected, billed, adjusted, paid, unapplied, refunded, balance


def _balances(books: ExpectedBooks, months: Sequence[SeenMonth]) -> tuple[int, int, list[str]]:
    seen = {(m.account_id, m.coverage_month): m for m in months}
    mismatched = 0
    examples: list[str] = []
    for key in sorted(set(seen) | set(books.months), key=str):
        want, row = books.months.get(key), seen.get(key)
        if want is None or row is None:
            problem = "no member_month row" if row is None else "a member_month row the program never made"
        else:
            wrong = [f"{name} {getattr(want, name)} recorded {getattr(row, name + '_cents')}" for name in MONTH_FIELDS
                     if getattr(want, name) != getattr(row, name + "_cents")]
            if not wrong:
                continue
            problem = ", ".join(wrong)
        mismatched += 1
        if len(examples) < EXAMPLES_MAX:
            examples.append(f"{key[0]} {key[1]}: {problem}")
    return len(books.months), mismatched, examples


def _unapplied(books: ExpectedBooks, unapplied: dict[str, int] | None) -> tuple[int, int, list[str]]:
    if unapplied is None:
        return 0, 0, []
    wrong = [f"{payer}: unapplied {books.unapplied.get(payer, 0)} recorded {unapplied.get(payer, 0)}"
             for payer in sorted(set(books.unapplied) | set(unapplied))
             if books.unapplied.get(payer, 0) != unapplied.get(payer, 0)]
    return len(set(books.unapplied) | set(unapplied)), len(wrong), wrong[:EXAMPLES_MAX]


def judge(program: Program, rows: Sequence[SeenDiscrepancy], adjudications: list[FsaClaimAdjudicated],
          months: Sequence[SeenMonth], books: ExpectedBooks | None = None,
          unapplied: dict[str, int] | None = None) -> Judgement:
    """``rows``: every discrepancy row; ``adjudications``: the FSA claim adjudications read back, in the
    order published (a re-published copy of one counts once); ``months``: every member_month row;
    ``books``: the oracle's (computed from the program when not given); ``unapplied``: every payer's
    unapplied cash (not compared when not given)."""
    books = books or expected_books(program)
    keys = [(r.kind, r.account_id, r.coverage_month, r.status) for r in rows]
    want, got = program.expected_findings(), Counter(k[:3] for k in keys)
    missed, spurious = want - got, got - want
    # expected rows not recorded: those of a missed finding, and those recorded in another status
    unmatched_rows = program.expected_rows - Counter(keys)
    status_mismatched = sum(unmatched_rows.values()) - sum(missed.values())
    wrong_status = sorted((r for r in unmatched_rows if r[:3] not in missed), key=str)
    decided: dict[str, list[FsaClaimAdjudicated]] = {}
    seen_ids: set[str] = set()
    for a in adjudications:
        if a.claim_id in program.claims and a.event_id not in seen_ids:
            seen_ids.add(a.event_id)
            decided.setdefault(a.claim_id, []).append(a)
    claim_mismatches = []
    for claim_id, want_claim in sorted(program.claims.items()):
        claim_got = decided.get(claim_id, [])
        if not claim_got:
            claim_mismatches.append(f"claim {claim_id} ({want_claim.why}): no adjudication")
        elif [(a.account_id, a.decision, a.approved_cents, a.pending_cents, a.requested_cents) for a in claim_got] != [
                (want_claim.account_id, *want, want_claim.requested_cents) for want in want_claim.adjudications]:
            claim_mismatches.append(
                f"claim {claim_id} ({want_claim.why}): expected {_adjudications(want_claim.adjudications)}, got"
                f" {_adjudications([(a.decision, a.approved_cents, a.pending_cents) for a in claim_got])}"
                f" ({'; '.join(a.reason for a in claim_got)})")
    by_decision = Counter[str](claim_got[0].decision for claim_got in decided.values())
    amounts_checked, amounts_by_kind, amount_examples = _amounts(books, rows)
    months_checked, balances_mismatched, balance_examples = _balances(books, months)
    payers_checked, unapplied_mismatched, unapplied_examples = _unapplied(books, unapplied)
    return Judgement(
        missed=sum(missed.values()), spurious=sum(spurious.values()), status_mismatched=status_mismatched,
        claims_adjudicated=len(decided), claims_by_decision={d: by_decision[d] for d in CLAIM_DECISIONS},
        claims_mismatched=len(claim_mismatches),
        missed_examples=[_text(m) for m in sorted(missed, key=str)[:EXAMPLES_MAX]],
        spurious_examples=[_text(x) for x in sorted(spurious, key=str)[:EXAMPLES_MAX]],
        mismatch_examples=([f"expected {_text(r)}" for r in wrong_status[:EXAMPLES_MAX]]
                           + claim_mismatches[:EXAMPLES_MAX]),
        amounts_checked=amounts_checked, amounts_mismatched=sum(amounts_by_kind.values()),
        amount_examples=amount_examples, amounts_mismatched_by_kind=dict(sorted(amounts_by_kind.items())),
        months_checked=months_checked, balances_mismatched=balances_mismatched, balance_examples=balance_examples,
        claim_payments=sum(len(claim_got) - 1 for claim_got in decided.values()), payers_checked=payers_checked,
        unapplied_mismatched=unapplied_mismatched, unapplied_examples=unapplied_examples,
    )


def _adjudications(adjudications: Sequence[tuple[str, int, int]]) -> str:
    return ", then ".join(f"{d} {approved}" + (f" ({pending} pending)" if pending else "")
                          for d, approved, pending in adjudications)
