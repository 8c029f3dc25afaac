"""Small event builders and a pure fold harness shared by the unit tests (no I/O)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from itertools import count
from typing import Any

from events.codec import encode
from events.topics import topic_for
from events.types import (
    BROADCAST_ACCOUNT,
    INPUT_TYPES,
    AdjustmentPosted,
    DayClosed,
    DiscrepancyOpened,
    DiscrepancyResolved,
    EnrollmentChanged,
    Event,
    FsaClaimSubmitted,
    FsaContributionReceived,
    FsaElectionMade,
    InputEvent,
    PaymentReceived,
    PaymentReversed,
    PremiumBilled,
    RatePublished,
    tag_of,
)
from processor.batch import BatchProcessor, BatchResult, Record, partition_for
from processor.rules.base import Outcome
from processor.rules.fold import fold_event
from processor.settings import PlanSettings, TopicSettings
from processor.state import AccountState, OpenDiscrepancy, PartitionState, encode_state
from projections.memory import MemoryStore

T0 = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
JAN, FEB, MAR, APR = date(2026, 1, 1), date(2026, 2, 1), date(2026, 3, 1), date(2026, 4, 1)
MAY, JUN, JUL = date(2026, 5, 1), date(2026, 6, 1), date(2026, 7, 1)
ACCOUNT = "M000001"
AGENCY = "AG-001"
HEALTH = "UMP-CLASSIC"
DENTAL = "DELTA-PPO"
UMP_EMP = 78_412

_seq = count(1)


def _eid(prefix: str) -> str:
    return f"{prefix}-{next(_seq):06d}"


def enroll(
    *, event_id: str | None = None, account: str = ACCOUNT, plan: str = HEALTH, tier: str = "EMP",
    line: str = "health", action: str = "add", begin: date = JAN, end: date | None = None,
    member: str | None = None, relationship: str = "self", status: str = "active", agency: str = AGENCY,
) -> EnrollmentChanged:
    return EnrollmentChanged(
        event_id=event_id or _eid("enr"), account_id=account, effective_on=begin, occurred_at=T0,
        member_id=member or account, relationship=relationship, plan=plan,  # type: ignore[arg-type]
        coverage_line=line, tier=tier, action=action, status=status,  # type: ignore[arg-type]
        benefit_begin=begin, benefit_end=end, agency_id=agency,
    )


def rate(
    total: int, *, event_id: str | None = None, plan: str = HEALTH, tier: str = "EMP",
    month_from: date = JAN, month_through: date | None = None, employee: int | None = None,
    rate_id: str | None = None,
) -> RatePublished:
    ee = total * 15 // 100 if employee is None else employee
    return RatePublished(
        event_id=event_id or _eid("rate"), account_id=BROADCAST_ACCOUNT, effective_on=month_from,
        occurred_at=T0, rate_id=rate_id or f"{plan}-{tier}-{month_from:%Y%m}", plan=plan, tier=tier,
        month_from=month_from, month_through=month_through, total_cents=total, employee_cents=ee,
        employer_cents=total - ee,
    )


def bill(
    amount: int, *, month: date = JAN, event_id: str | None = None, account: str = ACCOUNT,
    plan: str = HEALTH, tier: str = "EMP", bill_id: str | None = None, due_on: date | None = None,
    agency: str | None = AGENCY,
) -> PremiumBilled:
    eid = event_id or _eid("bill")
    return PremiumBilled(
        event_id=eid, account_id=account, effective_on=month, occurred_at=T0,
        bill_id=bill_id or f"B-{eid}", coverage_month=month, plan=plan, tier=tier, amount_cents=amount,
        due_on=due_on or month, agency_id=agency,
    )


def pay(
    amount: int, *, month: date | None = JAN, event_id: str | None = None, account: str = ACCOUNT,
    payment_id: str | None = None, payer: str = AGENCY, method: str = "payroll",
    trace: str | None = None, remittance: str | None = None, advice_only: bool = False,
) -> PaymentReceived:
    eid = event_id or _eid("pay")
    return PaymentReceived(
        event_id=eid, account_id=account, effective_on=month or JAN, occurred_at=T0,
        payment_id=payment_id or f"P-{eid}", coverage_month=month, amount_cents=amount,
        method=method, payer_id=payer, remittance_id=remittance, trace_number=trace,  # type: ignore[arg-type]
        advice_only=advice_only,
    )


def reverse(payment_id: str, *, event_id: str | None = None, account: str = ACCOUNT) -> PaymentReversed:
    return PaymentReversed(
        event_id=event_id or _eid("rev"), account_id=account, effective_on=JAN, occurred_at=T0,
        payment_id=payment_id, reason="returned NSF",
    )


def adjust(
    amount: int, *, month: date = JAN, event_id: str | None = None, account: str = ACCOUNT,
    adjustment_id: str | None = None, plan: str | None = None,
) -> AdjustmentPosted:
    eid = event_id or _eid("adj")
    return AdjustmentPosted(
        event_id=eid, account_id=account, effective_on=month, occurred_at=T0,
        adjustment_id=adjustment_id or f"A-{eid}", coverage_month=month, amount_cents=amount,
        reason="correction", plan=plan,
    )


def day(business_date: date, *, event_id: str | None = None) -> DayClosed:
    return DayClosed(
        event_id=event_id or _eid("day"), account_id=BROADCAST_ACCOUNT, effective_on=business_date,
        occurred_at=T0, business_date=business_date,
    )


def elect(
    election: int, *, year: int = 2026, account_type: str = "health", event_id: str | None = None,
    account: str = ACCOUNT, on: date | None = None, election_id: str | None = None, filing: str | None = None,
) -> FsaElectionMade:
    eid = event_id or _eid("fsa-elect")
    return FsaElectionMade(
        event_id=eid, account_id=account, effective_on=on or date(year, 1, 1), occurred_at=T0,
        election_id=election_id or f"EL-{eid}", member_id=account, plan_year=year,
        account_type=account_type, election_cents=election, tax_filing_status=filing,  # type: ignore[arg-type]
    )


def contribute(
    amount: int, *, on: date, year: int = 2026, account_type: str = "dependent_care", event_id: str | None = None,
    account: str = ACCOUNT, contribution_id: str | None = None,
) -> FsaContributionReceived:
    eid = event_id or _eid("fsa-contrib")
    return FsaContributionReceived(
        event_id=eid, account_id=account, effective_on=on, occurred_at=T0,
        contribution_id=contribution_id or f"C-{eid}", plan_year=year, account_type=account_type,  # type: ignore[arg-type]
        amount_cents=amount, payer_id=AGENCY,
    )


def claim(
    amount: int, *, service: date, submitted: date | None = None, account_type: str = "health",
    year: int | None = None, event_id: str | None = None, account: str = ACCOUNT, claim_id: str | None = None,
) -> FsaClaimSubmitted:
    eid = event_id or _eid("fsa-claim")
    return FsaClaimSubmitted(
        event_id=eid, account_id=account, effective_on=submitted or service, occurred_at=T0,
        claim_id=claim_id or f"CL-{eid}", account_type=account_type, service_date=service,  # type: ignore[arg-type]
        amount_cents=amount, plan_year=year, description="office visit",
    )


@dataclass
class Ledger:
    """Folds events with the pure functions, the way the processor does, for one partition."""

    plan: PlanSettings = field(default_factory=PlanSettings)
    part: PartitionState = field(default_factory=lambda: PartitionState(partition=0))
    accounts: dict[str, AccountState] = field(default_factory=dict)
    emitted: list[DiscrepancyOpened | DiscrepancyResolved] = field(default_factory=list)
    unapplied: dict[str, int] = field(default_factory=dict)

    def account(self, account_id: str = ACCOUNT) -> AccountState:
        state = self.accounts.get(account_id)
        if state is None:
            state = self.accounts[account_id] = AccountState(account_id=account_id, partition=0)
        return state

    def apply(self, *events: InputEvent) -> list[Outcome]:
        outs: list[Outcome] = []
        pending = list(events)
        while pending:
            event = pending.pop(0)
            reached = fold_event(event, self.part, self.plan, self.account, lambda: list(self.accounts.values()))
            outs.extend(out for _, out in reached)
            # what the relay publishes back (a cash application's payment, remittance lines): next
            pending[:0] = [d for _, out in reached for d in out.derived]
        for out in outs:
            self.emitted.extend(out.emitted)
            for payer, delta in out.payer_unapplied_delta.items():
                self.unapplied[payer] = self.unapplied.get(payer, 0) + delta
        return outs

    def open(self, kind: str | None = None, account_id: str = ACCOUNT) -> list[OpenDiscrepancy]:
        return [d for d in self.account(account_id).open.values() if kind is None or d.kind == kind]

    def one_open(self, kind: str, account_id: str = ACCOUNT) -> OpenDiscrepancy:
        found = self.open(kind, account_id)
        assert len(found) == 1, f"expected one open {kind}, found {found}"
        return found[0]

    def opened(self, kind: str | None = None) -> list[DiscrepancyOpened]:
        return [e for e in self.emitted
                if isinstance(e, DiscrepancyOpened) and (kind is None or e.kind == kind)]

    def resolved(self, kind: str | None = None) -> list[DiscrepancyResolved]:
        return [e for e in self.emitted
                if isinstance(e, DiscrepancyResolved) and (kind is None or e.kind == kind)]

    def snapshot(self) -> tuple[bytes, bytes]:
        return encode_state(self.account()), encode_state(self.part)


# ---------------------------------------------------------------------------------------------
# Broker records for BatchProcessor tests

TOPICS = TopicSettings()
PARTITIONS = 4
LOG = "log-1"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

TOPIC_OF = {tag_of(t): topic_for(t, TOPICS) for t in INPUT_TYPES}
HOME = partition_for(ACCOUNT.encode(), PARTITIONS)


class Feed:
    """Hands out records with increasing offsets per (topic, partition), like a broker log."""

    def __init__(self) -> None:
        self.next: dict[tuple[str, int], int] = defaultdict(int)

    def raw(self, topic: str, partition: int, key: bytes | None, value: bytes | None) -> Record:
        offset = self.next[(topic, partition)]
        self.next[(topic, partition)] += 1
        return Record(topic=topic, partition=partition, offset=offset, key=key, value=value)

    def record(
        self, event: Event, *, topic: str | None = None, key: bytes | None = None,
        partition: int | None = None, value: bytes | None = None,
    ) -> Record:
        tag = type(event).__struct_config__.tag
        assert isinstance(tag, str)
        key = event.account_id.encode() if key is None else key
        if partition is None:
            partition = partition_for(key, PARTITIONS)
        return self.raw(topic or TOPIC_OF[tag], partition, key, encode(event) if value is None else value)

    def broadcast(self, event: Event) -> list[Record]:
        tag = type(event).__struct_config__.tag
        assert isinstance(tag, str)
        return [self.raw(TOPIC_OF[tag], p, None, encode(event)) for p in range(PARTITIONS)]

    def records(self, *events: Event) -> list[Record]:
        out: list[Record] = []
        for e in events:
            out.extend(self.broadcast(e) if type(e).BROADCAST else [self.record(e)])
        return out


def make(store: MemoryStore | None = None, **options: Any) -> tuple[BatchProcessor, MemoryStore]:
    """A batch processor on an in-memory store; ``options`` go to BatchProcessor (e.g. ``fold``)."""
    store = store or MemoryStore()
    options.setdefault("clock", lambda: NOW)
    proc = BatchProcessor(store, log_id=LOG, plan=PlanSettings(), topics=TOPICS, partitions=PARTITIONS,
                          **options)
    return proc, store


def run(proc: BatchProcessor, store: MemoryStore, records: list[Record]) -> BatchResult:
    result = proc.process(records)
    store.commit_batch(result.write)
    proc.committed(result)
    return result
