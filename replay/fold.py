"""Replay: the archive folded again by the processor's own fold, in applied order.

Nothing here decides anything about billing or dispatches events: each archived event goes to
``processor.rules.fold.fold_event`` with every account replay holds for its partition (a superset of
what live processing reaches: its cache plus the store's candidate queries), and each outcome goes
through the same ``Collector`` the batch processor uses; discrepancy rows follow from the collected
write with ``apply_discrepancy_changes``, as the in-memory store applies them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from events import codec
from processor.collect import Collector
from processor.rules.base import Rejected
from processor.rules.fold import fold_event
from processor.settings import PlanSettings
from processor.state import AccountState, PartitionState
from projections.model import (
    BatchWrite,
    CoverageRow,
    DiscrepancyRow,
    FsaRow,
    MonthRow,
    apply_discrepancy_changes,
    coverage_rows,
    fsa_rows,
    month_rows,
)
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
        accounts = self._by_partition.setdefault(row.partition, {})

        def account_of(account_id: str) -> AccountState:
            account = res.accounts.get(account_id)
            if account is None:
                account = res.accounts[account_id] = accounts[account_id] = AccountState(
                    account_id=account_id, partition=row.partition)
            return account

        write = BatchWrite()
        collector = Collector(write)
        try:
            reached = fold_event(event, part, self.plan, account_of, lambda: list(accounts.values()))
            for account, out in reached:
                collector.add(account, out, row.recorded_at)
        except Rejected as exc:
            # The processor applied this event, so the same fold must apply it again.
            if self.strict:
                raise ReplayError(f"archive seq {row.seq} ({row.event_id}) is rejected on replay: {exc.reason}"
                                  ) from exc
            res.rejected.append(ReplayRejection(row.seq, row.event_id, exc.reason))
        else:
            if type(event).BROADCAST or any(out.partition_changed for _, out in reached):
                # as live: a partition's state is stored once a broadcast event changed it, so a
                # partition that saw account events alone (FSA events, say) has no partition_state row
                res.partitions[row.partition] = part
            apply_discrepancy_changes(res.discrepancies, write)
            for payer, delta in write.payer_unapplied_delta.items():
                res.payer_unapplied[payer] = res.payer_unapplied.get(payer, 0) + delta
        res.events_replayed += 1
        res.last_seq = row.seq
        res.last_recorded_at = row.recorded_at


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
