"""The books as known at a recorded time R: the replayed fold state plus the few facts of the archive
that the fold does not keep and the reports need (remittances, when each bill was issued, refunds,
notices, the type and time of every event), and the archive's chain head as of R.

Everything is collected while the archive streams through replay (``tap``), so a report reads the
archive once. ``books_from`` is pure (any iterable of archived events); ``load_books`` reads PostgreSQL.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from events import codec
from events.types import (
    AdjustmentPosted,
    NoticeIssued,
    PremiumBilled,
    RefundIssued,
    RefundReturned,
    RemittanceReceived,
)
from processor.settings import PlanSettings
from processor.state import PAYMENT_MOVED, AccountState, PaymentLine
from replay.archive import ArchivedEvent
from replay.fold import ReplayResult, replay

# Archive event types whose bodies the reports read (decoded once more; everything else passes through).
_KEPT = frozenset({"remittance_received", "premium_billed", "adjustment_posted", "refund_issued", "refund_returned",
                   "notice_issued"})


@dataclass(frozen=True, slots=True)
class Remittance:
    """One copy of a remittance (X12 820 BPR/TRN) as the archive has it."""

    event_id: str
    remittance_id: str
    payer_id: str
    payee_id: str | None
    method: str
    payment_date: date
    trace_number: str
    total_cents: int
    lines_total_cents: int
    line_count: int
    recorded_at: datetime
    adjustments_cents: int = 0  # remittance-level ADX: part of the total, of no line
    advice_only: bool = False  # no money moved with it: its lines are paid by the payment with its trace


@dataclass(frozen=True, slots=True)
class EventInfo:
    event_type: str
    recorded_at: datetime
    effective_on: date | None = None


@dataclass(frozen=True, slots=True)
class RefundInfo:
    event_id: str
    refund_id: str
    payee_id: str
    amount_cents: int
    method: str
    reason: str
    issued_on: date
    recorded_at: datetime
    returned_event_id: str | None = None
    returned_reason: str | None = None
    returned_on: date | None = None


@dataclass(frozen=True, slots=True)
class ChainInfo:
    """The archive's hash chain: each partition's head as of R (the last link replayed), and, when
    verified, the result of recomputing the whole chain (``verify-archive``)."""

    heads: dict[int, str]  # partition -> chain hash (hex) of its last event at or before R
    verified_at: datetime | None = None
    events_checked: int | None = None
    intact: bool | None = None
    broken_reason: str | None = None

    @property
    def digest(self) -> str:
        """One hex digest naming all partition heads (what a footer prints)."""
        text = ";".join(f"{p}:{h}" for p, h in sorted(self.heads.items()))
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(slots=True)
class Books:
    result: ReplayResult
    plan: PlanSettings
    known_at: datetime
    remittances: dict[str, list[Remittance]] = field(default_factory=dict)  # by remittance id, archive order
    issued_on: dict[str, date] = field(default_factory=dict)  # bill or adjustment event id -> the day it was issued
    refunds: dict[str, RefundInfo] = field(default_factory=dict)  # by refund id
    notices: list[tuple[NoticeIssued, datetime]] = field(default_factory=list)
    events: dict[str, EventInfo] = field(default_factory=dict)
    chain: ChainInfo | None = None
    _lines: dict[tuple[str, str], list[tuple[AccountState, PaymentLine]]] | None = None
    _remittance_lines: dict[str, list[tuple[AccountState, str, PaymentLine]]] | None = None
    _derived: set[str] | None = None

    @property
    def accounts(self) -> dict[str, AccountState]:
        return self.result.accounts

    @property
    def as_of_day(self) -> date:
        return self.known_at.astimezone(ZoneInfo(self.plan.timezone)).date()

    def latest_remittance(self, remittance_id: str) -> Remittance | None:
        copies = self.remittances.get(remittance_id)
        return copies[-1] if copies else None

    def derived_event_ids(self) -> set[str]:
        """Event ids of the payments the ledger posted itself for cash applications (``<cash_applied>:payment``):
        the moved line they came from already counts as received cash, so they are not received twice."""
        if self._derived is None:
            self._derived = {
                f"{p.reversal_event_id}:payment" for a in self.accounts.values() for m in a.months.values()
                for p in m.payments if p.status == PAYMENT_MOVED and p.reversal_event_id
            }
        return self._derived

    def lines_of(self, payer_id: str, month_key: str) -> list[tuple[AccountState, PaymentLine]]:
        """Every payment line of a payer for a coverage month (``-``: none named), on any account."""
        if self._lines is None:
            self._index()
        assert self._lines is not None
        return self._lines.get((payer_id, month_key), [])

    def lines_of_remittance(self, remittance_id: str) -> list[tuple[AccountState, str, PaymentLine]]:
        """Every payment line naming a remittance (derived payments included), with its month key."""
        if self._remittance_lines is None:
            self._index()
        assert self._remittance_lines is not None
        return self._remittance_lines.get(remittance_id, [])

    def _index(self) -> None:
        lines: dict[tuple[str, str], list[tuple[AccountState, PaymentLine]]] = {}
        by_remittance: dict[str, list[tuple[AccountState, str, PaymentLine]]] = {}
        for account in self.accounts.values():
            for key, month in account.months.items():
                for p in month.payments:
                    lines.setdefault((p.payer_id, key), []).append((account, p))
                    if p.remittance_id is not None:
                        by_remittance.setdefault(p.remittance_id, []).append((account, key, p))
        self._lines, self._remittance_lines = lines, by_remittance

    def describe_event(self, event_id: str | None) -> str:
        """``type event_id (recorded YYYY-MM-DD)`` for a reader; the id alone when it is not in these books."""
        if not event_id:
            return ""
        info = self.events.get(event_id)
        if info is None:
            return event_id
        day = info.recorded_at.astimezone(ZoneInfo(self.plan.timezone))
        return f"{info.event_type} {event_id} (recorded {day:%Y-%m-%d})"


def tap(rows: Iterable[ArchivedEvent], books: Books, *, keep_events: bool = True) -> Iterator[ArchivedEvent]:
    """Pass archived events through unchanged, keeping what the reports need in ``books`` (with
    ``keep_events``, the type and time of every event; else the caller looks up the few it names)."""
    zone = ZoneInfo(books.plan.timezone)
    try:
        for row in rows:
            if keep_events and row.event_id not in books.events:
                books.events[row.event_id] = EventInfo(row.event_type, row.recorded_at)
            if row.event_type in _KEPT:
                _keep(books, codec.decode_input(row.body), row.recorded_at, zone)
            yield row
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()


def _keep(books: Books, event: Any, recorded_at: datetime, zone: ZoneInfo) -> None:
    if isinstance(event, RemittanceReceived):
        books.remittances.setdefault(event.remittance_id, []).append(Remittance(
            event_id=event.event_id, remittance_id=event.remittance_id, payer_id=event.payer_id,
            payee_id=event.payee_id, method=event.method, payment_date=event.payment_date,
            trace_number=event.trace_number, total_cents=event.total_cents,
            lines_total_cents=event.lines_total_cents, line_count=event.line_count, recorded_at=recorded_at,
            adjustments_cents=sum(a.amount_cents for a in event.adjustments), advice_only=event.advice_only,
        ))
    elif isinstance(event, PremiumBilled | AdjustmentPosted):
        # the upstream billing system's own time: a bill issued late for an old month is aged from it
        books.issued_on[event.event_id] = event.occurred_at.astimezone(zone).date()
    elif isinstance(event, RefundIssued):
        books.refunds[event.refund_id] = RefundInfo(
            event_id=event.event_id, refund_id=event.refund_id, payee_id=event.payee_id,
            amount_cents=event.amount_cents, method=event.method, reason=event.reason,
            issued_on=event.effective_on, recorded_at=recorded_at,
        )
    elif isinstance(event, RefundReturned):
        issued = books.refunds.get(event.refund_id)
        if issued is not None:
            books.refunds[event.refund_id] = RefundInfo(
                **{**{f: getattr(issued, f) for f in issued.__dataclass_fields__},
                   "returned_event_id": event.event_id, "returned_reason": event.reason,
                   "returned_on": event.effective_on})
    elif isinstance(event, NoticeIssued):
        books.notices.append((event, recorded_at))


def books_from(
    rows: Iterable[ArchivedEvent], plan: PlanSettings, *, known_at: datetime,
    progress: Callable[[int], None] | None = None, keep_events: bool = True,
) -> Books:
    """Replay ``rows`` (archive order, already cut at R) and keep what the reports need. Pure."""
    books = Books(result=ReplayResult(), plan=plan, known_at=known_at)
    books.result = replay(tap(rows, books, keep_events=keep_events), plan, progress=progress)
    return books


def named_events(books: Books) -> set[str]:
    """The events the reports describe by type and time: what resolved a discrepancy, returned a refund,
    reversed or moved a payment."""
    ids = {d.resolved_by for d in books.result.discrepancies.values() if d.resolved_by}
    for a in books.accounts.values():
        for m in a.months.values():
            ids.update(r.returned_by for r in m.refunds if r.returned_by)
            ids.update(p.reversal_event_id for p in m.payments if p.reversal_event_id)
    return ids


def chain_as_of(conn: Any, known_at: datetime) -> dict[int, str]:
    """Each partition's chain hash at its last event recorded at or before R (what replay stopped after)."""
    from replay.archive import partition_bounds

    bounds = partition_bounds(conn, known_at)
    if not bounds:
        return {}
    rows = conn.execute("SELECT partition, chain_hash FROM archive WHERE seq = ANY(%s)",
                        (list(bounds.values()),)).fetchall()
    return {int(p): bytes(h).hex() for p, h in rows if h is not None}


def load_books(
    dsn: str, plan: PlanSettings, *, known_at: datetime, account_id: str | None = None,
    verify: bool = False, progress: Callable[[int], None] | None = None,
    clock: Callable[[], datetime] | None = None,
) -> Books:
    """The books as known at R from the PostgreSQL archive; ``verify`` recomputes the whole hash chain
    (as ``verify-archive`` does) and records when."""
    from datetime import UTC

    from replay.archive import connect, read_archive

    with connect(dsn) as conn:
        try:
            # a million events' types and times would be kept for the few a report names: look those up
            books = books_from(read_archive(conn, known_at=known_at, account_id=account_id), plan,
                               known_at=known_at, progress=progress, keep_events=False)
            wanted = sorted(named_events(books))
            for event_id, event_type, recorded_at in conn.execute(
                    "SELECT DISTINCT ON (event_id) event_id, event_type, recorded_at FROM archive"
                    " WHERE event_id = ANY(%s) ORDER BY event_id, seq", (wanted,)):
                books.events[event_id] = EventInfo(event_type, recorded_at)
            heads = chain_as_of(conn, known_at)
        finally:
            conn.rollback()
    books.chain = ChainInfo(heads=heads)
    if verify:
        from projections.postgres import PostgresStore

        store = PostgresStore(dsn)
        try:
            report = store.verify_archive()
        finally:
            store.close()
        books.chain = ChainInfo(
            heads=heads, verified_at=(clock or (lambda: datetime.now(UTC)))(), events_checked=report.events_checked,
            intact=report.intact, broken_reason=None if report.first_broken is None else
            f"seq {report.first_broken.seq}: {report.first_broken.reason}",
        )
    return books
