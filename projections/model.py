"""What the processor hands a store in one transaction, and the rows the query functions return."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any, Protocol

import msgspec

from processor.rules.fsa import available_cents
from processor.state import AccountState, OpenDiscrepancy, PartitionState, encode_state
from processor.stops import DataIntegrityStop
from processor.stored import header_to_write
from projections.fold_state import MonthStateRow, changed_months, check_month_writes


class PositionConflict(RuntimeError):
    """Another writer moved a partition's position: this batch was already applied or is stale."""


class LogTruncated(DataIntegrityStop):
    """A known log now ends before a position already applied (for example a restarted memory broker)."""


class ArchiveRow(msgspec.Struct, frozen=True, gc=False):
    log_id: str
    topic: str
    partition: int
    offset: int
    dedupe_key: str  # event_id, or event_id@p<partition> for broadcast copies
    event_id: str
    event_type: str
    account_id: str
    effective_on: date
    occurred_at: datetime
    recorded_at: datetime
    body: bytes  # canonical JSON
    body_hash: bytes


class DeadLetterRow(msgspec.Struct, frozen=True, gc=False):
    log_id: str
    topic: str
    partition: int
    offset: int
    event_id: str | None
    reason: str
    field: str | None
    key: bytes | None
    raw: bytes
    recorded_at: datetime


class PositionAdvance(msgspec.Struct, frozen=True, gc=False):
    """Move (log, topic, partition) from ``expected_next`` (None: never seen) to ``next_offset``."""

    log_id: str
    topic: str
    partition: int
    expected_next: int | None
    next_offset: int
    applied: int
    duplicates: int
    dead_lettered: int


# Which topic the relay sends an outbox row to (names of TopicSettings fields, not topic names).
DISCREPANCIES_STREAM = "discrepancies"
CLAIMS_STREAM = "claims"
PAYMENTS_STREAM = "payments"  # payments the ledger posts itself (cash applied to another month or account)
# Streams onto the ledger's own input topics: a row of one is delivered only once the processor has seen
# its event come back (BatchWrite.echoed); until then the relay publishes it again on a new log.
ECHO_STREAMS = frozenset({PAYMENTS_STREAM})


class OutboxRow(msgspec.Struct, frozen=True, gc=False):
    event_id: str
    key: str
    body: bytes
    stream: str = DISCREPANCIES_STREAM


@dataclass(slots=True)
class DiscrepancyRow:
    discrepancy_id: str
    kind: str
    account_id: str
    coverage_month: date | None
    payer_id: str | None
    expected_cents: int
    actual_cents: int
    cause_event_ids: tuple[str, ...]
    explanation: str
    action: str
    actor: str
    status: str  # open | resolved | superseded | waived | written_off | closed
    opened_by: str
    resolved_by: str | None = None
    opened_recorded_at: datetime | None = None
    resolved_recorded_at: datetime | None = None
    # the work on it (processor/workflow.py): owner, what it waits on, notes, the last action, an approval
    # that is pending
    assignee: str | None = None
    work_status: str = "open"
    notes: int = 0
    last_user: str | None = None
    last_reason: str | None = None
    last_event_id: str | None = None
    pending_action: str | None = None  # waive | write_off, waiting for a supervisor
    pending_cents: int | None = None
    pending_by: str | None = None
    pending_event_id: str | None = None
    # the agency it belongs to (processor.rules.workflow.agency_of): computed by the queue queries, not stored
    agency_id: str | None = None

    @staticmethod
    def from_open(account_id: str, d: OpenDiscrepancy, recorded_at: datetime) -> DiscrepancyRow:
        row = DiscrepancyRow(
            discrepancy_id=d.discrepancy_id, kind=d.kind, account_id=account_id,
            coverage_month=d.coverage_month, payer_id=d.payer_id, expected_cents=d.expected_cents,
            actual_cents=d.actual_cents, cause_event_ids=d.cause_event_ids, explanation=d.explanation,
            action=d.action, actor=d.actor, status="open", opened_by=d.opened_by,
            opened_recorded_at=recorded_at,
        )
        row.follow(d)
        return row

    def follow(self, d: OpenDiscrepancy) -> None:
        """Take the fold's current amounts, explanation, causes and work on the discrepancy (not its
        status: closing events set that)."""
        self.expected_cents, self.actual_cents = d.expected_cents, d.actual_cents
        self.explanation, self.action, self.cause_event_ids = d.explanation, d.action, d.cause_event_ids
        self.assignee, self.notes = d.assignee, d.notes
        self.work_status = d.work_status
        self.last_user, self.last_reason, self.last_event_id = d.last_user, d.last_reason, d.last_event_id
        p = d.pending
        self.pending_action, self.pending_cents, self.pending_by, self.pending_event_id = (
            (p.action, p.amount_cents, p.requested_by, p.event_id) if p is not None else (None, None, None, None))


# What a changed discrepancy row (BatchWrite.discrepancies_changed) writes: amounts, explanation, causes
# and the work on it; never its identity, status or times.
CHANGED_FIELDS = (
    "expected_cents", "actual_cents", "explanation", "action", "cause_event_ids", "assignee", "work_status", "notes",
    "last_user", "last_reason", "last_event_id", "pending_action", "pending_cents", "pending_by", "pending_event_id",
)


class DiscrepancyClose(msgspec.Struct, frozen=True, gc=False):
    discrepancy_id: str
    resolved_by: str
    recorded_at: datetime
    status: str = "resolved"  # or "superseded": explained by a later retroactive change; or how a person
    # closed it (DiscrepancyClosed): waived, written_off, closed


@dataclass(frozen=True, slots=True)
class FrozenState:
    """A batch's account and partition changes as bytes and rows, fixed at the end of the fold.

    The processor folds the next batch into the same state objects while this one commits, so a
    store writes these, never the live objects.
    """

    snapshots: list[tuple[str, int, bytes]]  # account_id, partition, encoded header (processor/state.py)
    months: list[MonthRow]
    coverage: dict[str, list[CoverageRow]]  # accounts whose coverage rows are rewritten
    partitions: list[tuple[int, bytes]]
    fsa: list[FsaRow] = field(default_factory=list)  # every FSA account of the accounts whose FSA moved
    # the months of state the batch changed: account_id, month key, ordinal (place in the account), bytes
    month_states: list[MonthStateRow] = field(default_factory=list)


@dataclass(slots=True)
class BatchWrite:
    """Everything one processor batch changes; a store applies all of it or none of it."""

    archive: list[ArchiveRow] = field(default_factory=list)
    accounts: dict[str, AccountState] = field(default_factory=dict)
    dirty_months: dict[str, set[str]] = field(default_factory=dict)
    coverage_changed: set[str] = field(default_factory=set)
    fsa_changed: set[str] = field(default_factory=set)
    partitions: dict[int, PartitionState] = field(default_factory=dict)
    discrepancies_opened: list[DiscrepancyRow] = field(default_factory=list)
    discrepancies_changed: list[DiscrepancyRow] = field(default_factory=list)
    discrepancies_closed: list[DiscrepancyClose] = field(default_factory=list)
    outbox: list[OutboxRow] = field(default_factory=list)
    payer_unapplied_delta: dict[str, int] = field(default_factory=dict)
    positions: list[PositionAdvance] = field(default_factory=list)
    dead_letters: list[DeadLetterRow] = field(default_factory=list)
    # event ids of outbox rows of ECHO_STREAMS this batch saw come back (applied, duplicate or dead letter)
    echoed: list[str] = field(default_factory=list)
    frozen: FrozenState | None = None

    def freeze(self) -> FrozenState:
        """Encode the account and partition changes once; later calls return the same result."""
        if self.frozen is None:
            months: list[MonthRow] = []
            snapshots: list[tuple[str, int, bytes]] = []
            month_states: list[MonthStateRow] = []
            check = check_month_writes()
            for account_id, account in self.accounts.items():
                keys = self.dirty_months.get(account_id) or set()
                if keys:
                    months.extend(month_rows(account, keys))
                header = header_to_write(account)
                if header is not None:
                    snapshots.append((account_id, account.partition, header))
                month_states.extend(changed_months(account, keys, check=check))
            self.frozen = FrozenState(
                snapshots=snapshots,
                months=months,
                coverage={a: coverage_rows(self.accounts[a]) for a in self.coverage_changed},
                partitions=[(p, encode_state(st)) for p, st in self.partitions.items()],
                fsa=[row for a in sorted(self.fsa_changed) for row in fsa_rows(self.accounts[a])],
                month_states=month_states,
            )
        return self.frozen


class MonthRow(msgspec.Struct, frozen=True, gc=False):
    account_id: str
    coverage_month: date
    partition: int
    expected_cents: int | None
    billed_cents: int
    adjusted_cents: int
    paid_cents: int
    unapplied_cents: int
    balance_cents: int
    due_on: date | None
    refunded_cents: int = 0
    post_tax_cents: int | None = None
    imputed_income_cents: int | None = None
    employee_share_cents: int | None = None
    employer_share_cents: int | None = None


class CoverageRow(msgspec.Struct, frozen=True, gc=False):
    account_id: str
    member_id: str
    relationship: str
    coverage_line: str
    plan: str
    tier: str
    status: str
    begin_on: date
    end_on: date | None
    agency_id: str
    event_id: str


@dataclass(frozen=True, slots=True)
class FsaRow:
    """One flexible spending account of one plan year (projection ``fsa_account``)."""

    account_id: str
    member_id: str
    plan_year: int
    account_type: str
    election_cents: int
    contributed_cents: int
    reimbursed_cents: int
    carryover_in_cents: int
    carryover_out_cents: int
    available_cents: int
    closed: bool


@dataclass(frozen=True, slots=True)
class AccountBalance:
    account_id: str
    coverages: list[CoverageRow]
    months: list[MonthRow]
    open_discrepancies: list[DiscrepancyRow]

    @property
    def balance_cents(self) -> int:
        return sum(m.balance_cents for m in self.months)


@dataclass(frozen=True, slots=True)
class Counts:
    received: int
    applied: int
    duplicates: int
    dead_lettered: int


@dataclass(frozen=True, slots=True)
class Summary:
    members: int
    accounts: int
    coverage_months: int
    billed_cents: int
    adjusted_cents: int
    paid_cents: int
    outstanding_cents: int
    credits_cents: int
    unapplied_cents: int
    discrepancies_opened_by_kind: dict[str, int]
    discrepancies_open_by_kind: dict[str, int]
    counts: Counts


def month_rows(account: AccountState, keys: set[str] | None = None) -> list[MonthRow]:
    """Projection rows of an account's coverage months (payments naming no month are payer cash only)."""
    rows = []
    months = account.months
    for key in (months if keys is None else sorted(keys)):
        m = months.get(key)
        if m is None or m.month is None:
            continue
        billed, adjusted, paid, unapplied = m.totals()
        refunded = m.refunded_cents
        rows.append(MonthRow(
            account_id=account.account_id, coverage_month=m.month, partition=account.partition,
            expected_cents=m.expected_cents, billed_cents=billed, adjusted_cents=adjusted,
            paid_cents=paid, unapplied_cents=unapplied, balance_cents=billed + adjusted - paid + refunded,
            due_on=m.due_on, refunded_cents=refunded, post_tax_cents=m.post_tax_cents,
            imputed_income_cents=m.imputed_income_cents, employee_share_cents=m.employee_share_cents,
            employer_share_cents=m.employer_share_cents,
        ))
    return rows


def fsa_rows(account: AccountState) -> list[FsaRow]:
    """Projection rows of an account's flexible spending accounts, by plan year and account type."""
    if account.fsa is None:
        return []
    return [
        FsaRow(
            account_id=account.account_id, member_id=y.member_id, plan_year=y.plan_year,
            account_type=y.account_type, election_cents=y.election_cents, contributed_cents=y.contributed_cents,
            reimbursed_cents=y.reimbursed_cents, carryover_in_cents=y.carryover_in_cents,
            carryover_out_cents=y.carryover_out_cents, available_cents=available_cents(y), closed=y.closed,
        )
        for y in sorted(account.fsa.years.values(), key=lambda y: (y.plan_year, y.account_type))
    ]


def coverage_rows(account: AccountState) -> list[CoverageRow]:
    return [
        CoverageRow(
            account_id=account.account_id, member_id=s.member_id, relationship=s.relationship,
            coverage_line=s.coverage_line, plan=s.plan, tier=s.tier, status=s.status, begin_on=s.begin,
            end_on=s.end, agency_id=s.agency_id, event_id=s.event_id,
        )
        for s in account.coverages
    ]


# -- the work queue and the workbench's reads (processor/entrypoints/web) -------------------------

QUEUE_SORTS = ("age", "amount", "agency", "kind", "actor", "assignee", "account")
UNASSIGNED = ""  # QueueQuery.assignee that asks for the discrepancies nobody owns


@dataclass(frozen=True, slots=True)
class QueueQuery:
    """Filters and order of the discrepancy queue. ``status`` None means any status; ``assignee``
    UNASSIGNED means nobody's; ``pending`` True only those awaiting a supervisor's approval.

    Order: ``sort`` (age: opened first; amount: the largest difference first; the others by name),
    ``descending`` turns it round; a missing value sorts last either way; ties by discrepancy id.
    """

    status: str | None = "open"
    kind: str | None = None
    account_id: str | None = None
    payer_id: str | None = None
    agency_id: str | None = None
    actor: str | None = None
    assignee: str | None = None
    work_status: str | None = None
    pending: bool | None = None
    sort: str = "age"
    descending: bool = False
    limit: int = 200
    offset: int = 0

    def __post_init__(self) -> None:
        if self.sort not in QUEUE_SORTS:
            raise ValueError(f"sort must be one of {', '.join(QUEUE_SORTS)}, not {self.sort!r}")
        if not (0 < self.limit <= 10_000) or self.offset < 0:
            raise ValueError("limit must be 1 to 10000 and offset not negative")


@dataclass(frozen=True, slots=True)
class QueuePage:
    rows: list[DiscrepancyRow]
    total: int  # rows matching the filters, before limit and offset


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One event of an account's history: archived (``seq``), or emitted by the ledger (a discrepancy
    event from the outbox; ``recorded_at`` is then that of the event that caused it)."""

    seq: int | None
    event_id: str
    event_type: str
    account_id: str
    effective_on: date
    occurred_at: datetime
    recorded_at: datetime | None
    body: bytes  # canonical JSON
    emitted: bool = False


@dataclass(frozen=True, slots=True)
class EventStatus:
    """What became of an event a person submitted: applied (archived) or dead-lettered (with why)."""

    event_id: str
    state: str  # applied | dead_lettered
    recorded_at: datetime
    reason: str | None = None
    field: str | None = None
    account_id: str | None = None


@dataclass(frozen=True, slots=True)
class AgencyRow:
    agency_id: str
    accounts: int  # accounts whose subscriber coverage that began last is the agency's
    open_discrepancies: int
    outstanding_cents: int  # positive month balances of those accounts


@dataclass(frozen=True, slots=True)
class AccountRow:
    account_id: str
    agency_id: str | None
    balance_cents: int
    open_discrepancies: int


def discrepancy_agency(account_id: str, own_agency: str | None, payer_id: str | None) -> str | None:
    """processor.rules.workflow.agency_of on projection rows: a payer account's payer, else the agency of
    the subscriber coverage that began last (``own_agency``), else the discrepancy's payer."""
    if account_id.startswith("payer:"):
        return account_id.removeprefix("payer:")
    return own_agency if own_agency is not None else payer_id


def merge_history(
    archived: list[HistoryEntry], emitted: list[tuple[int, bytes, int | None, datetime | None]], account_id: str,
    limit: int,
) -> list[HistoryEntry]:
    """An account's history: archived events in seq order, each followed by the events the ledger emitted
    because of it (outbox order); emitted events whose cause is not archived come last. ``emitted`` holds
    (outbox seq, body, the cause's archive seq, the cause's recorded time)."""
    import msgspec

    placed: list[tuple[tuple[int, int, int], HistoryEntry]] = [((e.seq or 0, 0, 0), e) for e in archived]
    last = 1 << 62
    for outbox_seq, body, cause_seq, cause_recorded in emitted:
        data = msgspec.json.decode(body)
        placed.append(((cause_seq if cause_seq is not None else last, 1, outbox_seq), HistoryEntry(
            seq=None, event_id=data["event_id"], event_type=data["type"], account_id=account_id,
            effective_on=date.fromisoformat(data["effective_on"]),
            occurred_at=datetime.fromisoformat(data["occurred_at"]), recorded_at=cause_recorded, body=body,
            emitted=True,
        )))
    placed.sort(key=lambda p: p[0])
    return [e for _, e in placed[:limit]]


def queue_order_key(row: DiscrepancyRow, sort: str) -> Any:
    """The sort value of a row (None sorts last); both stores order by it."""
    if sort == "age":
        return row.opened_recorded_at
    if sort == "amount":
        return abs(row.expected_cents - row.actual_cents)
    if sort == "agency":
        return row.agency_id
    if sort == "kind":
        return row.kind
    if sort == "actor":
        return row.actor
    if sort == "assignee":
        return row.assignee
    return row.account_id


def select_queue(rows: Iterable[DiscrepancyRow], query: QueueQuery) -> QueuePage:
    """The queue over rows that carry their agency, in memory: the in-memory store and as-of replays use it;
    PostgresStore.discrepancy_queue answers the same in SQL."""
    kept = []
    for d in rows:
        if any(want is not None and have != want for have, want in (
            (d.status, query.status), (d.kind, query.kind), (d.account_id, query.account_id),
            (d.payer_id, query.payer_id), (d.actor, query.actor), (d.work_status, query.work_status),
            (d.agency_id, query.agency_id),
        )):
            continue
        if query.assignee is not None and d.assignee != (None if query.assignee == UNASSIGNED else query.assignee):
            continue
        if query.pending is not None and (d.pending_action is not None) != query.pending:
            continue
        kept.append(d)
    kept.sort(key=lambda d: d.discrepancy_id)
    desc = (query.sort == "amount") != query.descending
    known = [d for d in kept if queue_order_key(d, query.sort) is not None]
    missing = [d for d in kept if queue_order_key(d, query.sort) is None]
    known.sort(key=lambda d: queue_order_key(d, query.sort), reverse=desc)  # stable: ties stay in id order
    ordered = known + missing
    return QueuePage(rows=ordered[query.offset:query.offset + query.limit], total=len(ordered))


def next_log_id(cluster_id: str, known: list[str]) -> str:
    """The log id after ``known`` (every log id of the cluster so far): ``<cluster id>~2``, ``~3``, ..."""
    numbers = [1] + [int(lg.rsplit("~", 1)[1]) for lg in known
                     if lg.startswith(f"{cluster_id}~") and lg.rsplit("~", 1)[1].isdigit()]
    return f"{cluster_id}~{max(numbers) + 1}"


class LedgerStore(Protocol):
    """The contract both stores keep; tests/contract runs the same tests against each."""

    def migrate(self) -> None: ...
    def close(self) -> None: ...

    # processor side
    def positions(self, log_id: str) -> dict[tuple[str, int], int]: ...
    def load_accounts(self, account_ids: list[str]) -> dict[str, AccountState]: ...
    def load_partitions(self, partitions: list[int]) -> dict[int, PartitionState]: ...
    def due_accounts(self, partition: int, due_before: date) -> list[str]: ...
    def cycle_accounts(self, partition: int, month: date) -> list[str]: ...
    def month_accounts(self, partition: int, month_from: date, month_through: date | None) -> list[str]: ...
    def fsa_open_accounts(self, partition: int, plan_year_through: int) -> list[str]: ...
    def agency_accounts(self, agency_ids: list[str]) -> list[str]: ...
    def find_events(self, dedupe_keys: list[str]) -> dict[str, bytes]: ...
    def archived_body(self, dedupe_key: str) -> bytes | None: ...
    def payer_unapplied_for(self, payer_ids: list[str]) -> dict[str, int]: ...
    def commit_batch(self, batch: BatchWrite) -> None: ...

    # relay side
    def outbox_pending(
        self, limit: int, *, log_id: str | None = None, republish_before: datetime | None = None,
    ) -> list[tuple[int, OutboxRow]]: ...
    def mark_published(self, seqs: list[int], *, log_id: str | None = None) -> None: ...
    def outbox_undelivered(self, limit: int) -> list[tuple[int, OutboxRow]]: ...

    # log identity (processor/logid.py)
    def current_log(self, cluster_id: str) -> str: ...
    def start_new_log(self, cluster_id: str, reason: str) -> tuple[str, str]: ...
    def log_topics(self, log_id: str) -> dict[str, str]: ...
    def record_log_topics(self, log_id: str, topic_ids: dict[str, str]) -> None: ...

    # queries
    def balance(self, account_id: str) -> AccountBalance | None: ...
    def discrepancies(
        self, *, open_only: bool = False, kind: str | None = None, account_id: str | None = None,
        limit: int = 1000,
    ) -> list[DiscrepancyRow]: ...
    def summary(self) -> Summary: ...
    def counts(self) -> Counts: ...
    def archive_count(self) -> int: ...
    def dead_letters(self, limit: int = 1000) -> list[DeadLetterRow]: ...
    def payer_unapplied(self) -> dict[str, int]: ...
    def fsa_accounts(self, account_id: str) -> list[FsaRow]: ...
    def member_months(self, limit: int = 1000) -> list[MonthRow]: ...

    # the workbench's reads
    def discrepancy_queue(self, query: QueueQuery) -> QueuePage: ...
    def discrepancy(self, discrepancy_id: str) -> DiscrepancyRow | None: ...
    def account_history(self, account_id: str, *, limit: int = 10_000) -> list[HistoryEntry]: ...
    def event_status(self, event_ids: list[str]) -> dict[str, EventStatus]: ...
    def agencies(self) -> list[AgencyRow]: ...
    def accounts(self, *, prefix: str = "", agency_id: str | None = None, limit: int = 200) -> list[AccountRow]: ...



def apply_discrepancy_changes(rows: dict[str, DiscrepancyRow], batch: BatchWrite) -> None:
    """What a batch does to the discrepancy rows (by id); the PostgreSQL store does the same in SQL."""
    for d in batch.discrepancies_opened:
        rows[d.discrepancy_id] = replace(d)  # a copy: the caller keeps its row
    for d in batch.discrepancies_changed:  # amounts, explanation, action, causes and the work; not the status
        stored = rows[d.discrepancy_id]
        for name in CHANGED_FIELDS:
            setattr(stored, name, getattr(d, name))
    for c in batch.discrepancies_closed:
        stored = rows[c.discrepancy_id]
        stored.status, stored.resolved_by = c.status, c.resolved_by
        stored.resolved_recorded_at = c.recorded_at
