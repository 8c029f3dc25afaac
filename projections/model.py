"""What the processor hands a store in one transaction, and the rows the query functions return."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Protocol

from processor.fsa import available_cents
from processor.state import AccountState, OpenDiscrepancy, PartitionState, encode_state
from processor.stops import DataIntegrityStop


class PositionConflict(RuntimeError):
    """Another writer moved a partition's position: this batch was already applied or is stale."""


class LogTruncated(DataIntegrityStop):
    """A known log now ends before a position already applied (for example a restarted memory broker)."""


@dataclass(frozen=True, slots=True)
class ArchiveRow:
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


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
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


@dataclass(frozen=True, slots=True)
class PositionAdvance:
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


@dataclass(frozen=True, slots=True)
class OutboxRow:
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
    status: str  # open | resolved
    opened_by: str
    resolved_by: str | None = None
    opened_recorded_at: datetime | None = None
    resolved_recorded_at: datetime | None = None

    @staticmethod
    def from_open(account_id: str, d: OpenDiscrepancy, recorded_at: datetime) -> DiscrepancyRow:
        return DiscrepancyRow(
            discrepancy_id=d.discrepancy_id, kind=d.kind, account_id=account_id,
            coverage_month=d.coverage_month, payer_id=d.payer_id, expected_cents=d.expected_cents,
            actual_cents=d.actual_cents, cause_event_ids=d.cause_event_ids, explanation=d.explanation,
            action=d.action, actor=d.actor, status="open", opened_by=d.opened_by,
            opened_recorded_at=recorded_at,
        )


@dataclass(frozen=True, slots=True)
class DiscrepancyClose:
    discrepancy_id: str
    resolved_by: str
    recorded_at: datetime
    status: str = "resolved"  # or "superseded": explained by a later retroactive change


@dataclass(frozen=True, slots=True)
class FrozenState:
    """A batch's account and partition changes as bytes and rows, fixed at the end of the fold.

    The processor folds the next batch into the same state objects while this one commits, so a
    store writes these, never the live objects.
    """

    snapshots: list[tuple[str, int, bytes]]  # account_id, partition, encoded AccountState
    months: list[MonthRow]
    coverage: dict[str, list[CoverageRow]]  # accounts whose coverage rows are rewritten
    partitions: list[tuple[int, bytes]]
    fsa: list[FsaRow] = field(default_factory=list)  # every FSA account of the accounts whose FSA moved


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
            for account_id, account in self.accounts.items():
                keys = self.dirty_months.get(account_id)
                if keys:
                    months.extend(month_rows(account, keys))
            self.frozen = FrozenState(
                snapshots=[(a, st.partition, encode_state(st)) for a, st in self.accounts.items()],
                months=months,
                coverage={a: coverage_rows(self.accounts[a]) for a in self.coverage_changed},
                partitions=[(p, encode_state(st)) for p, st in self.partitions.items()],
                fsa=[row for a in sorted(self.fsa_changed) for row in fsa_rows(self.accounts[a])],
            )
        return self.frozen


@dataclass(frozen=True, slots=True)
class MonthRow:
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


@dataclass(frozen=True, slots=True)
class CoverageRow:
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
    for key, m in account.months.items():
        if m.month is None or (keys is not None and key not in keys):
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
    def partition_accounts(self, partition: int) -> list[str]: ...
    def month_accounts(self, partition: int, month_from: date, month_through: date | None) -> list[str]: ...
    def fsa_open_accounts(self, partition: int, plan_year_through: int) -> list[str]: ...
    def agency_accounts(self, agency_ids: list[str]) -> list[str]: ...
    def find_events(self, dedupe_keys: list[str]) -> dict[str, bytes]: ...
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
