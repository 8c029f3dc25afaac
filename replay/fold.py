"""Replay: the archive folded again with the processor's own pure functions, in applied order.

Nothing here decides anything about billing. Each event goes to the same function the processor
calls (``apply_partition_event``, ``apply_account_event``, ``close_day``), per partition, in seq order;
a ``DayClosed`` closes the day of every account of its partition for which ``months_to_check`` is
non-empty, which is exactly the set live processing reaches (its cache plus ``due_accounts``). The
projection rows are derived with ``projections.model.month_rows`` / ``coverage_rows``, as the store's
batches are, and discrepancy rows follow the emitted events as ``BatchProcessor._collect`` writes them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from events import codec
from events.types import (
    BillingCycleClosed,
    DayClosed,
    DiscrepancyClosed,
    DiscrepancyOpened,
    DiscrepancyResolved,
    RatePublished,
)
from processor.fold import (
    Outcome,
    Rejected,
    apply_account_event,
    apply_partition_event,
    close_billing_cycle,
    close_day,
    day_may_change,
    publish_rate,
)
from processor.settings import PlanSettings
from processor.state import AccountState, PartitionState
from projections.model import CoverageRow, DiscrepancyRow, FsaRow, MonthRow, coverage_rows, fsa_rows, month_rows
from replay.archive import ArchivedEvent


class ReplayError(RuntimeError):
    """An archived event could not be folded again: the archive and the fold disagree."""


@dataclass(frozen=True, slots=True)
class ReplayRejection:
    seq: int
    event_id: str
    reason: str


@dataclass(slots=True)
class ReplayResult:
    """The books as the replayed prefix of the archive leaves them."""

    accounts: dict[str, AccountState] = field(default_factory=dict)
    partitions: dict[int, PartitionState] = field(default_factory=dict)
    discrepancies: dict[str, DiscrepancyRow] = field(default_factory=dict)  # by discrepancy_id
    payer_unapplied: dict[str, int] = field(default_factory=dict)  # every payer touched, zeros kept
    events_replayed: int = 0
    last_seq: int | None = None
    last_recorded_at: datetime | None = None
    rejected: list[ReplayRejection] = field(default_factory=list)

    def month_rows(self) -> list[MonthRow]:
        return [row for a in self.accounts.values() for row in month_rows(a)]

    def coverage_rows(self) -> dict[str, list[CoverageRow]]:
        """Coverage rows per account, in the fold's segment order (the live ``segment`` column)."""
        return {a.account_id: coverage_rows(a) for a in self.accounts.values() if a.coverages}

    def fsa_rows(self) -> list[FsaRow]:
        """The fsa_account projection rows (derived from the account state, as the store's batches are)."""
        return [row for a in self.accounts.values() for row in fsa_rows(a)]

    def payer_cash(self) -> dict[str, int]:
        """Unapplied cash per payer, non-zero only (as ``LedgerStore.payer_unapplied``)."""
        return {p: c for p, c in sorted(self.payer_unapplied.items()) if c}


class Replayer:
    """Folds archived events one at a time; ``result`` is the state after the last one."""

    def __init__(self, plan: PlanSettings, *, strict: bool = True) -> None:
        self.plan = plan
        self.strict = strict
        self.result = ReplayResult()
        self._by_partition: dict[int, dict[str, AccountState]] = {}
        self._parts: dict[int, PartitionState] = {}

    def apply(self, row: ArchivedEvent) -> None:
        event = codec.decode_input(row.body)
        res = self.result
        part = self._parts.get(row.partition)
        if part is None:
            part = self._parts[row.partition] = PartitionState(partition=row.partition)
        if type(event).BROADCAST:
            # the live batch stores a partition's state only once a broadcast event changed it, so a
            # partition that saw account events alone (FSA events, say) has no partition_state row
            res.partitions[row.partition] = part
        try:
            if isinstance(event, RatePublished):
                candidates = list(self._by_partition.get(row.partition, {}).values())
                for touched, out in publish_rate(candidates, part, event, self.plan):
                    self._collect(touched, out, row)
            elif isinstance(event, DayClosed):
                apply_partition_event(part, event)
                for candidate in list(self._by_partition.get(row.partition, {}).values()):
                    if day_may_change(candidate, event.business_date, self.plan):
                        self._collect(candidate, close_day(candidate, part, event, self.plan), row)
            elif isinstance(event, BillingCycleClosed):
                # every account of the partition is judged; those whose cycle month changed are written
                apply_partition_event(part, event)
                for candidate in list(self._by_partition.get(row.partition, {}).values()):
                    out = close_billing_cycle(candidate, part, event, self.plan)
                    if out.dirty_months:
                        self._collect(candidate, out, row)
            elif type(event).BROADCAST:
                raise ReplayError(f"archive seq {row.seq}: replay does not know the broadcast event"
                                  f" {type(event).__name__} (processor/batch.py folds it; replay/fold.py must too)")
            else:
                account = res.accounts.get(event.account_id)
                if account is None:
                    account = AccountState(account_id=event.account_id, partition=row.partition)
                    res.accounts[event.account_id] = account
                    self._by_partition.setdefault(row.partition, {})[event.account_id] = account
                self._collect(account, apply_account_event(account, part, event, self.plan), row)
        except Rejected as exc:
            # The processor applied this event, so the same fold must apply it again.
            if self.strict:
                raise ReplayError(f"archive seq {row.seq} ({row.event_id}) is rejected on replay: {exc.reason}"
                                  ) from exc
            res.rejected.append(ReplayRejection(row.seq, row.event_id, exc.reason))
        res.events_replayed += 1
        res.last_seq = row.seq
        res.last_recorded_at = row.recorded_at

    def _collect(self, account: AccountState, out: Outcome, row: ArchivedEvent) -> None:
        """The store's view of one outcome: payer cash and discrepancy rows (as the batch writes them)."""
        res = self.result
        for payer, delta in out.payer_unapplied_delta.items():
            res.payer_unapplied[payer] = res.payer_unapplied.get(payer, 0) + delta
        for ev in out.emitted:
            # other output events (amount changes) reach the row through changed_discrepancies
            if isinstance(ev, DiscrepancyOpened):
                opened = next(d for d in account.open.values() if d.discrepancy_id == ev.discrepancy_id)
                res.discrepancies[ev.discrepancy_id] = DiscrepancyRow.from_open(
                    account.account_id, opened, row.recorded_at
                )
            elif isinstance(ev, DiscrepancyResolved | DiscrepancyClosed):
                existing = res.discrepancies.get(ev.discrepancy_id)
                if existing is not None:
                    existing.status = ev.status if isinstance(ev, DiscrepancyClosed) else "resolved"
                    existing.resolved_by = ev.causation_id or ""
                    existing.resolved_recorded_at = row.recorded_at
        for d in out.changed_discrepancies:
            existing = res.discrepancies.get(d.discrepancy_id)
            if existing is not None:
                existing.follow(d)


def replay(
    events: Iterable[ArchivedEvent], plan: PlanSettings, *, strict: bool = True,
    progress: Callable[[int], None] | None = None, progress_every: int = 10_000,
) -> ReplayResult:
    """Fold the events (in the order given: archive seq order) and return the books they leave."""
    replayer = Replayer(plan, strict=strict)
    n = 0
    try:
        for row in events:
            replayer.apply(row)
            n += 1
            if progress is not None and n % progress_every == 0:
                progress(n)
    finally:
        # a reader stopped early (an error) must end its COPY before the connection is used again
        close = getattr(events, "close", None)
        if close is not None:
            close()
    if progress is not None:
        progress(n)
    return replayer.result
