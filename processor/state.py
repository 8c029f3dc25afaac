"""Fold state: what the ledger knows about one account, and about one partition's reference data.

Mutable msgspec Structs so the hot path can update in place; they are snapshotted (msgspec bytes)
with the projections in the same transaction, so a restarted worker resumes exactly.

The state's parts are trees of plain data that never refer back (no reference cycles), so they are
``gc=False``: the cyclic garbage collector does not track them. A cached account at 84 months of history
is thousands of objects, and a full collection visits every tracked one; with accounts loaded and evicted
all the time that cost grew with history (about half of a cold account's load at 84 months).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

import msgspec

from events.types import Cents, DiscrepancyKind, EnrollmentChanged

# declared in processor/partition_state.py; imported from here as well, with the account state
from processor.partition_state import PartitionState as PartitionState
from processor.partition_state import RateEntry as RateEntry


class CoverageSegment(msgspec.Struct, kw_only=True, gc=False):
    member_id: str
    relationship: str
    coverage_line: str
    plan: str
    tier: str
    status: str
    begin: date
    end: date | None
    agency_id: str
    event_id: str
    end_event_id: str | None = None  # the termination that set ``end``, when one did
    elected_on: date | None = None  # COBRA election
    cobra_start: date | None = None  # first month of COBRA continuation coverage
    disability_extension: bool = False
    tax_dependent: bool = True
    end_reason: str | None = None  # the termination's reason ("death" may waive the month's premium)
    coverage_amount_cents: Cents | None = None  # life insurance face amount
    birth_year: int | None = None
    birth_date: date | None = None  # the covered person's, for a dependent's age limit
    missing_elements: tuple[str, ...] = ()  # what the sender left out (834 HD05...), with where

    def overlaps_month(self, month_first: date, month_last: date) -> bool:
        return self.begin <= month_last and (self.end is None or self.end >= month_first)


class BillLine(msgspec.Struct, kw_only=True, gc=False):
    bill_id: str
    plan: str
    tier: str
    amount_cents: Cents
    due_on: date
    agency_id: str | None
    event_id: str


class AdjustmentLine(msgspec.Struct, kw_only=True, gc=False):
    adjustment_id: str
    plan: str | None
    amount_cents: Cents
    event_id: str


# How a payment line was placed. Only "applied" counts as paid on the member-month; the others sit as
# unapplied cash on the payer's account until a later event places them.
PAYMENT_APPLIED = "applied"
PAYMENT_HELD = "held"  # unmatched: month never billed, or no month given
PAYMENT_AFTER_TERM = "after_termination"
PAYMENT_DUPLICATE = "duplicate"
PAYMENT_REVERSED = "reversed"
PAYMENT_REFUNDED = "refunded"  # held cash returned to the payer
PAYMENT_MOVED = "moved"  # held cash applied to another month or account (cash_applied)
PAYMENT_ADVISED = "advised"  # a remittance advice line: no money yet, paid when its remittance is funded
PAYMENT_FUNDS = "funds_remittance"  # money on a payer's account that funds a remittance advice
UNAPPLIED_STATUSES = frozenset({PAYMENT_HELD, PAYMENT_AFTER_TERM, PAYMENT_DUPLICATE})


class PaymentLine(msgspec.Struct, kw_only=True, gc=False):
    payment_id: str
    amount_cents: Cents
    payer_id: str
    method: str
    trace_number: str | None
    remittance_id: str | None
    status: str
    event_id: str
    reversal_event_id: str | None = None
    duplicate_of: str | None = None
    tax_treatment: str | None = None
    pay_frequency: str | None = None
    moved_to: str | None = None  # "<account>/<YYYY-MM>" once cash_applied moved it there
    refund_id: str | None = None  # the refund that returned this held cash
    refunded_from: str | None = None  # the status it had before (restored if the refund comes back)
    plan: str | None = None  # the coverage the line says it pays (a remittance line per policy)
    coverage_line: str | None = None


class AdviceLine(msgspec.Struct, kw_only=True, gc=False):
    account_id: str
    payment_id: str
    amount_cents: Cents


class RemittanceBook(msgspec.Struct, kw_only=True, gc=False):
    """One remittance on its payer's account: what the sender says (the header, once it arrived) and
    what the ledger actually posted of its lines (``remittance_line_posted``)."""

    remittance_id: str
    payer_id: str
    trace_number: str | None = None
    header_event_id: str | None = None  # None until the remittance_received arrives
    total_cents: Cents = 0
    declared_lines_cents: Cents = 0
    line_count: int = 0
    adjustments_cents: Cents = 0  # remittance-level ADX: part of the total, of no line
    payment_date: date | None = None
    advice_only: bool = False
    posted_cents: Cents = 0
    posted_count: int = 0
    advice_lines: list[AdviceLine] = msgspec.field(default_factory=list)  # advice lines waiting for money
    judged: bool = False
    excess_cents: Cents = 0  # cash beyond the posted lines, held as unapplied cash on the payer
    funded_by: str | None = None  # the payment that moved an advice's money
    funded_cents: Cents = 0


class PendingApproval(msgspec.Struct, kw_only=True, gc=False):
    """A waiver or write-off above the plan's limit, waiting for a supervisor (processor/workflow.py)."""

    action: str  # "waive" | "write_off"
    amount_cents: Cents  # the adjustment asked for (signed)
    requested_by: str
    event_id: str
    reason: str


class OpenDiscrepancy(msgspec.Struct, kw_only=True, gc=False):
    discrepancy_id: str
    kind: DiscrepancyKind
    key: str
    coverage_month: date | None
    payer_id: str | None
    expected_cents: Cents
    actual_cents: Cents
    cause_event_ids: tuple[str, ...]
    explanation: str
    action: str
    actor: str
    opened_by: str
    # Work on it (processor/workflow.py): who owns it, what it waits on, the last action, a pending
    # approval; and once a person closed it, how (waived, written_off, closed) with the adjustments its
    # waiver posted. ``suppress``: closed without moving money, so the same finding with the same
    # amounts is not opened again.
    assignee: str | None = None
    work_status: str = "open"  # open | waiting_agency | waiting_member | waived | written_off | closed
    notes: int = 0
    last_user: str | None = None
    last_reason: str | None = None
    last_event_id: str | None = None
    pending: PendingApproval | None = None
    adjustment_ids: tuple[str, ...] = ()
    suppress: bool = False


class RetroLine(msgspec.Struct, kw_only=True, gc=False):
    """An enrollment or rate change that reached back into this (already billed) month and moved its
    premium."""

    event_id: str
    change_date: date
    premium_before_cents: Cents
    premium_after_cents: Cents
    days_back: int  # from the change date to when the upstream system made the change
    beyond_limit: bool
    cause: str = "enrollment"  # "enrollment" or "rate"


class RefundLine(msgspec.Struct, kw_only=True, gc=False):
    refund_id: str
    payee_id: str
    amount_cents: Cents
    event_id: str
    returned_by: str | None = None  # the refund_returned that put the money back on the account


class MonthState(msgspec.Struct, kw_only=True, gc=False):
    """One coverage month of one account. ``month`` None holds payments that named no month."""

    month: date | None
    bills: list[BillLine] = msgspec.field(default_factory=list)
    adjustments: list[AdjustmentLine] = msgspec.field(default_factory=list)
    payments: list[PaymentLine] = msgspec.field(default_factory=list)
    expected_cents: Cents | None = None
    retro: list[RetroLine] = msgspec.field(default_factory=list)
    # Where the retroactive change the month shows now begins in ``retro``: lines before it belong to
    # changes already settled (the bill agreed with the premium again).
    retro_from: int = 0
    refunds: list[RefundLine] = msgspec.field(default_factory=list)
    # Section 125 / IRC 79, derived from the coverage: the part of the employee's share that must be
    # taken after tax, and the month's imputed income (None while a rate or an age is not known).
    post_tax_cents: Cents | None = None
    imputed_income_cents: Cents | None = None
    # The expected premium split into the employee's share (payroll deduction or direct payment) and
    # the employer's contribution; None while a rate is not known.
    employee_share_cents: Cents | None = None
    employer_share_cents: Cents | None = None

    def totals(self) -> tuple[Cents, Cents, Cents, Cents]:
        """billed, adjusted, paid (applied), unapplied: one pass, for projections."""
        paid = unapplied = 0
        for p in self.payments:
            if p.status == PAYMENT_APPLIED:
                paid += p.amount_cents
            elif p.status in UNAPPLIED_STATUSES:
                unapplied += p.amount_cents
        return (sum(b.amount_cents for b in self.bills), sum(a.amount_cents for a in self.adjustments),
                paid, unapplied)

    # The sums are plain loops: the compiled rules call them for every month they reconcile, and a month
    # holds a line or two, where a generator costs more than the sum.
    @property
    def billed_cents(self) -> Cents:
        total = 0
        for b in self.bills:
            total += b.amount_cents
        return total

    @property
    def adjusted_cents(self) -> Cents:
        total = 0
        for a in self.adjustments:
            total += a.amount_cents
        return total

    @property
    def paid_cents(self) -> Cents:
        total = 0
        for p in self.payments:
            if p.status == PAYMENT_APPLIED:
                total += p.amount_cents
        return total

    @property
    def unapplied_cents(self) -> Cents:
        total = 0
        for p in self.payments:
            if p.status in UNAPPLIED_STATUSES:
                total += p.amount_cents
        return total

    @property
    def refunded_cents(self) -> Cents:
        total = 0
        for r in self.refunds:
            if r.returned_by is None:
                total += r.amount_cents
        return total

    @property
    def balance_cents(self) -> Cents:
        """Balance due = billed + adjustments - paid + refunds; negative is a credit."""
        return self.billed_cents + self.adjusted_cents - self.paid_cents + self.refunded_cents

    @property
    def due_on(self) -> date | None:
        due: date | None = None
        for b in self.bills:
            if due is None or b.due_on < due:
                due = b.due_on
        return due


class FsaYear(msgspec.Struct, kw_only=True, gc=False):
    """One flexible spending account (health or dependent care) of one plan year."""

    plan_year: int
    account_type: str
    member_id: str
    election_cents: Cents = 0
    elected: bool = False  # an election was made (a year may exist only to receive a carryover)
    election_event_id: str | None = None
    participation_from: date | None = None  # the first election's effective date: expenses before it are not covered
    tax_filing_status: str | None = None
    contributed_cents: Cents = 0
    reimbursed_cents: Cents = 0
    carryover_in_cents: Cents = 0
    carryover_out_cents: Cents = 0
    closed: bool = False  # the run-out ended and the unused balance was carried over or forfeited
    pending_cents: Cents = 0  # dependent care: promised to pending claims, paid as contributions arrive


class FsaClaim(msgspec.Struct, kw_only=True, gc=False):
    """An adjudicated claim, kept so a claim id is paid once and the CLI can list decisions."""

    claim_id: str
    event_id: str
    plan_year: int
    account_type: str
    requested_cents: Cents
    approved_cents: Cents
    decision: str
    service_date: date | None = None
    submitted_on: date | None = None
    reason: str = ""
    pending_cents: Cents = 0  # a dependent-care remainder waiting for contributions


class FsaState(msgspec.Struct, kw_only=True, gc=False):
    years: dict[str, FsaYear] = msgspec.field(default_factory=dict)  # "<plan year>|<account type>"
    claims: dict[str, FsaClaim] = msgspec.field(default_factory=dict)  # by claim_id
    contribution_ids: dict[str, str] = msgspec.field(default_factory=dict)  # contribution_id -> event id
    election_ids: dict[str, str] = msgspec.field(default_factory=dict)  # election_id -> event id
    # account type -> the last day of participation, when employment ended (an 834 termination of the
    # member's fsa or dcap coverage line); gone again if participation is continued (COBRA) or reinstated
    ended: dict[str, date] = msgspec.field(default_factory=dict)


def fsa_key(plan_year: int, account_type: str) -> str:
    return f"{plan_year}|{account_type}"


class NoticeRecord(msgspec.Struct, kw_only=True, gc=False):
    """A notice issued about some of the account's discrepancies (``notice_issued``), kept so a notice id
    is issued once and the work queue can say who was told what, and when."""

    notice_id: str
    event_id: str
    recipient: str
    recipient_id: str
    discrepancy_ids: tuple[str, ...]
    issued_on: date
    channel: str = "mail"


class AccountState(msgspec.Struct, kw_only=True, dict=True):
    """One account's fold state. The lookups by payment and bill id are derived from the months (kept
    beside the state, never encoded with it), so the state's size grows with its months alone."""

    account_id: str
    partition: int
    coverages: list[CoverageSegment] = msgspec.field(default_factory=list)
    months: dict[str, MonthState] = msgspec.field(default_factory=dict)  # "YYYY-MM-DD" or "-"
    open: dict[str, OpenDiscrepancy] = msgspec.field(default_factory=dict)  # by key
    refund_ids: list[str] = msgspec.field(default_factory=list)
    application_ids: list[str] = msgspec.field(default_factory=list)  # cash_applied events folded here
    fsa: FsaState | None = None  # flexible spending accounts, once the member has any (older snapshots: None)
    # Terminations, changes and reinstatements that arrived before the coverage they change: kept, in
    # arrival order, and applied when that coverage arrives (the books do not depend on arrival order).
    pending_enrollments: list[EnrollmentChanged] = msgspec.field(default_factory=list)
    remittances: dict[str, RemittanceBook] = msgspec.field(default_factory=dict)  # a payer's, by remittance id
    notices: list[NoticeRecord] = msgspec.field(default_factory=list)  # notices issued (older snapshots: none)
    # discrepancies a person closed (waived, written off, dismissed), by discrepancy id: a dismissed finding
    # stays closed while it shows the same amounts, and any of them can be reopened (processor/workflow.py)
    closed: dict[str, OpenDiscrepancy] = msgspec.field(default_factory=dict)

    @property
    def payment_months(self) -> dict[str, str]:
        """payment_id -> the key of the month its line is on."""
        index: dict[str, str] | None = self.__dict__.get("_payment_months")
        if index is None:
            index = self.__dict__["_payment_months"] = {
                p.payment_id: key for key, m in self.months.items() for p in m.payments}
        return index

    @property
    def bill_months(self) -> dict[str, str]:
        """bill_id -> the key of the month it bills."""
        index: dict[str, str] | None = self.__dict__.get("_bill_months")
        if index is None:
            index = self.__dict__["_bill_months"] = {b.bill_id: key for key, m in self.months.items() for b in m.bills}
        return index

    @property
    def unpaid_months(self) -> set[str]:
        """Keys of the months billed with nothing applied: the only months a business day can find missing
        (processor/rules/days.py), so a day need not walk the whole history. Kept up to date by
        ``month_changed``, which the fold calls for every month it re-projects (and every changed month is
        re-projected: projections/fold_state.py checks that in the test suite)."""
        index: set[str] | None = self.__dict__.get("_unpaid_months")
        if index is None:
            index = self.__dict__["_unpaid_months"] = {k for k, m in self.months.items() if unpaid(m)}
        return index

    def month_changed(self, key: str) -> None:
        index: set[str] | None = self.__dict__.get("_unpaid_months")
        if index is not None:
            if unpaid(self.months[key]):
                index.add(key)
            else:
                index.discard(key)

    @property
    def waiting_books(self) -> set[str]:
        """Ids of the remittance books a business day may still judge (``waiting``): a payer account gains a
        book with every remittance, and the rules that look for due ones walk these, not all of them. Kept
        up to date by ``book_changed``, which the remittance rules call for every book they change."""
        index: set[str] | None = self.__dict__.get("_waiting_books")
        if index is None:
            index = self.__dict__["_waiting_books"] = {r for r, b in self.remittances.items() if waiting(b)}
        return index

    def book_changed(self, remittance_id: str) -> None:
        index: set[str] | None = self.__dict__.get("_waiting_books")
        if index is not None:
            if waiting(self.remittances[remittance_id]):
                index.add(remittance_id)
            else:
                index.discard(remittance_id)

    def open_at(self, row: str) -> tuple[str, ...]:
        """Keys of the open discrepancies about one row (the month or remittance key their key names), in
        the order of ``open``: a month's settlement and its write look at these, not at every finding."""
        at = self._open_index().get(row)
        return () if at is None else tuple(at)

    def closed_at(self, row: str) -> tuple[str, ...]:
        """Ids of the discrepancies a person closed about one row, in the order of ``closed``."""
        at = self._closed_index().get(row)
        return () if at is None else tuple(at)

    def finding_rows(self) -> set[str]:
        """The row keys some open or closed discrepancy is about."""
        return {*self._open_index(), *self._closed_index()}

    # Both indexes are built on first use and kept beside the state (never encoded with it).
    def _open_index(self) -> dict[str, dict[str, None]]:
        return self._findings_index(OPEN_AT)

    def _closed_index(self) -> dict[str, dict[str, None]]:
        return self._findings_index(CLOSED_AT)

    def _findings_index(self, name: str) -> dict[str, dict[str, None]]:
        index: dict[str, dict[str, None]] | None = self.__dict__.get(name)
        if index is None:
            index = self.__dict__[name] = scan_findings(self, name)
        return index

    # Every change of ``open`` and ``closed`` goes through these four, which keep the indexes above.
    def put_open(self, d: OpenDiscrepancy) -> None:
        self.open[d.key] = d
        _index_add(self.__dict__.get(OPEN_AT), d.key, d.key)

    def pop_open(self, dkey: str) -> OpenDiscrepancy:
        d = self.open.pop(dkey)
        _index_drop(self.__dict__.get(OPEN_AT), dkey, dkey)
        return d

    def put_closed(self, d: OpenDiscrepancy) -> None:
        self.closed[d.discrepancy_id] = d
        _index_add(self.__dict__.get(CLOSED_AT), d.discrepancy_id, d.key)

    def pop_closed(self, discrepancy_id: str) -> OpenDiscrepancy:
        d = self.closed.pop(discrepancy_id)
        _index_drop(self.__dict__.get(CLOSED_AT), discrepancy_id, d.key)
        return d

    def forget_indexes(self) -> None:
        """The months were replaced wholesale: the lookups are derived again on next use."""
        self.__dict__.pop("_payment_months", None)
        self.__dict__.pop("_bill_months", None)
        self.__dict__.pop("_ordinals", None)
        self.__dict__.pop("_book_ordinals", None)
        self.__dict__.pop("_waiting_books", None)
        self.__dict__.pop("_unpaid_months", None)
        self.__dict__.pop(MONTH_LINES, None)
        self.__dict__.pop(OPEN_AT, None)
        self.__dict__.pop(CLOSED_AT, None)


# in AccountState.__dict__: the open discrepancies' keys and the closed ones' ids, by the row they are about
OPEN_AT = "_open_at"
CLOSED_AT = "_closed_at"


def scan_findings(account: AccountState, name: str) -> dict[str, dict[str, None]]:
    """The findings index ``name`` (OPEN_AT or CLOSED_AT) built from scratch, in the account's order."""
    entries: Iterable[tuple[str, str]] = (
        ((k, k) for k in account.open) if name == OPEN_AT else ((i, d.key) for i, d in account.closed.items()))
    index: dict[str, dict[str, None]] = {}
    for ident, dkey in entries:
        index.setdefault(month_of_key(dkey), {})[ident] = None
    return index


def _index_add(index: dict[str, dict[str, None]] | None, ident: str, dkey: str) -> None:
    if index is not None:
        index.setdefault(month_of_key(dkey), {})[ident] = None


def _index_drop(index: dict[str, dict[str, None]] | None, ident: str, dkey: str) -> None:
    if index is not None:
        row = month_of_key(dkey)
        at = index[row]
        del at[ident]
        if not at:
            del index[row]


# in AccountState.__dict__: each month's line count and their total, as processor/footprint.py last saw them
MONTH_LINES = "_month_lines"


def waiting(book: RemittanceBook) -> bool:
    """Not judged yet (or an advice not funded yet), with its header in."""
    return book.header_event_id is not None and (not book.judged or (book.advice_only and book.funded_by is None))


def unpaid(month: MonthState) -> bool:
    """Billed, and nothing applied to it yet."""
    if not month.bills:
        return False
    for p in month.payments:
        if p.status == PAYMENT_APPLIED:
            return False
    return True


def month_key(month: date | None) -> str:
    return "-" if month is None else month.isoformat()


_account_encoder = msgspec.msgpack.Encoder()
_account_decoder = msgspec.msgpack.Decoder(AccountState)
_partition_decoder = msgspec.msgpack.Decoder(PartitionState)
_month_decoder = msgspec.msgpack.Decoder(MonthState)


def encode_state(state: AccountState | PartitionState) -> bytes:
    return _account_encoder.encode(state)


def decode_account(raw: bytes) -> AccountState:
    return _account_decoder.decode(raw)


def decode_partition(raw: bytes) -> PartitionState:
    return _partition_decoder.decode(raw)


BOOK_ROW = "remittance:"  # the row key of a remittance book: BOOK_ROW + its remittance id (processor/stored.py)


def month_of_key(dkey: str) -> str:
    """The month key a discrepancy key is about (``kind|month[|detail]``; a remittance's: its row key)."""
    return dkey.split("|", 2)[1]


def book_row(remittance_id: str) -> str:
    return BOOK_ROW + remittance_id
