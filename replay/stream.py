"""Replay in bounded memory: each partition's accounts folded a group at a time, with the partition's
broadcast events merged in at their places in archive order.

Accounts fold independently. An account event changes its own account; a broadcast event (rates,
business days, billing cycles) changes the partition's reference data and then each account it reaches
on its own; and the one entry of the partition state an account's fold writes (``remittances_due``) is
keyed by that account and read by it alone. So some accounts of a partition, folded with every broadcast
event of the partition in seq order, end exactly as they end in a fold of the whole partition. A group
holds at most ``accounts_max`` accounts and about ``bytes_max`` bytes of archived bodies (an account is
never split); it is folded with ``processor.rules.fold.fold_event`` and collected with the ``Collector``
as everywhere, handed to its consumer (compare, write, count) and dropped.

A business day is offered only to the accounts it may change. Each account's first such date is
``days.next_day_may_change`` (``day_may_change`` holds from that date on and on no date before), kept
in a heap and worked out again once the account changed; an account costs nothing for the days it
sleeps through, however many business days the history has.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from operator import attrgetter
from typing import Any, Protocol

import psycopg

from events import codec
from events.types import BROADCAST_ACCOUNT, DayClosed, InputEvent
from processor.collect import Collector
from processor.rules.base import Rejected
from processor.rules.days import next_day_may_change
from processor.rules.fold import fold_event
from processor.settings import PlanSettings
from processor.state import AccountState, PartitionState
from projections.model import BatchWrite, DiscrepancyRow, apply_discrepancy_changes
from replay.archive import AccountRange, ArchivedEvent, archive_partitions, read_accounts, read_broadcasts
from replay.fold import ReplayError, ReplayRejection, ReplayResult

ACCOUNTS_MAX = 500
BYTES_MAX = 16 * 1024 * 1024
_seq = attrgetter("seq")


@dataclass(slots=True)
class GroupResult:
    """What one group of accounts of one partition ends as (discrepancies and cash of these accounts)."""

    partition: int
    accounts: dict[str, AccountState] = field(default_factory=dict)
    discrepancies: dict[str, DiscrepancyRow] = field(default_factory=dict)
    payer_unapplied: dict[str, int] = field(default_factory=dict)  # what these accounts moved, per payer
    late_payer_unapplied: dict[str, int] = field(default_factory=dict)  # ... by the events ``late`` names
    remittances_due: dict[str, date] = field(default_factory=dict)  # these accounts' entries
    partition_changed: bool = False  # an account event changed the partition state
    events: int = 0  # account events folded (the partition's broadcasts count once, in PartitionResult)
    rejected: list[ReplayRejection] = field(default_factory=list)
    days_offered: int = 0  # accounts offered to business days
    last_seq: int | None = None
    last_recorded_at: datetime | None = None


@dataclass(slots=True)
class PartitionResult:
    """A partition's reference data once every group is folded; ``state`` None: no partition_state row
    (as live: none until a broadcast or an account event changes it)."""

    partition: int
    state: PartitionState | None
    broadcasts: int
    rejected: list[ReplayRejection]
    last_seq: int | None
    last_recorded_at: datetime | None


class _Calendar:
    """Per account, the first business date that may change it; a day takes the accounts due by then."""

    def __init__(self, accounts: dict[str, AccountState], plan: PlanSettings) -> None:
        self.accounts = accounts
        self.plan = plan
        self.first: dict[str, date] = {}
        self.heap: list[tuple[date, str]] = []
        self.changed: set[str] = set()

    def due(self, business_date: date) -> list[AccountState]:
        first, heap = self.first, self.heap
        for account_id in self.changed:
            on = next_day_may_change(self.accounts[account_id], self.plan)
            if on != first.get(account_id):
                if on is None:
                    del first[account_id]
                else:
                    first[account_id] = on
                    heapq.heappush(heap, (on, account_id))
        self.changed.clear()
        due: list[AccountState] = []
        while heap and heap[0][0] <= business_date:
            on, account_id = heapq.heappop(heap)
            if first.get(account_id) == on:  # else a date since replaced
                del first[account_id]
                due.append(self.accounts[account_id])
        # worked out again at the next day, whatever this one does to them (or if it is rejected)
        self.changed.update(a.account_id for a in due)
        if len(heap) > 4 * len(first) + 1024:  # drop replaced dates
            self.heap = [(on, a) for a, on in first.items()]
            heapq.heapify(self.heap)
        return due


def _merged(rows: list[ArchivedEvent], broadcasts: list[tuple[ArchivedEvent, InputEvent]]
            ) -> Iterator[tuple[ArchivedEvent, InputEvent | None]]:
    """Account rows (not decoded yet: None) and decoded broadcasts, both in seq order, merged by seq."""
    i, n = 0, len(broadcasts)
    for row in rows:
        seq = row.seq
        while i < n and broadcasts[i][0].seq < seq:
            yield broadcasts[i]
            i += 1
        yield row, None
    yield from broadcasts[i:]


class PartitionReplay:
    """One partition: its broadcast events (decoded once) and the groups of its accounts.

    ``broadcasts`` are the partition's broadcast rows in seq order. They are folded once on their own
    first, without accounts: that gives the partition's reference data and the broadcasts it rejects
    (a rejection of a broadcast does not depend on the accounts). ``late(seq)`` names events whose cash
    moves are also counted apart (``late_payer_unapplied``: rebuild's catch-up).
    """

    def __init__(self, plan: PlanSettings, partition: int, broadcasts: Iterable[ArchivedEvent], *,
                 strict: bool = True, late: Callable[[int], bool] | None = None) -> None:
        self.plan = plan
        self.partition = partition
        self.strict = strict
        self.late = late
        self.broadcasts: list[tuple[ArchivedEvent, InputEvent]] = []
        self._rejected: dict[int, ReplayRejection] = {}
        self._state = PartitionState(partition=partition)
        self._changed = False  # a broadcast was folded: the partition has a partition_state row
        self._due: dict[str, date] = {}
        self._last: ArchivedEvent | None = None

        def nobody(_account_id: str) -> AccountState:
            raise AssertionError("a broadcast event named an account")

        for row in broadcasts:
            if row.partition != partition:
                raise ReplayError(f"archive seq {row.seq} of partition {row.partition} read for {partition}")
            event = codec.decode_input(row.body)
            if not type(event).BROADCAST:
                raise ReplayError(f"archive seq {row.seq} ({row.event_id}) is read as broadcast but is"
                                  f" {row.event_type} for {event.account_id}")
            self.broadcasts.append((row, event))
            self._note(row)
            try:
                fold_event(event, self._state, plan, nobody, list)
            except Rejected as exc:
                if strict:
                    raise ReplayError(f"archive seq {row.seq} ({row.event_id}) is rejected on replay:"
                                      f" {exc.reason}") from exc
                self._rejected[row.seq] = ReplayRejection(row.seq, row.event_id, exc.reason)
            else:
                self._changed = True

    def _note(self, row: ArchivedEvent) -> None:
        if self._last is None or row.seq > self._last.seq:
            self._last = row

    def groups(self, rows: Iterable[ArchivedEvent], *, accounts_max: int = ACCOUNTS_MAX,
               bytes_max: int = BYTES_MAX) -> Iterator[GroupResult]:
        """Fold the partition's account rows, given in (account_id, seq) order, a group at a time."""
        if accounts_max < 1 or bytes_max < 1:
            raise ValueError("accounts_max and bytes_max must be at least 1")
        group: list[ArchivedEvent] = []
        size = accounts = 0
        current: str | None = None
        for row in rows:
            if row.account_id != current:
                if current is not None and row.account_id < current:
                    raise ReplayError(f"archive seq {row.seq}: accounts out of order ({row.account_id} after"
                                      f" {current})")
                if accounts >= accounts_max or size >= bytes_max:
                    yield self.fold_group(group)
                    group, size, accounts = [], 0, 0
                current = row.account_id
                accounts += 1
            group.append(row)
            size += len(row.body)
        if group:
            yield self.fold_group(group)

    def fold_group(self, rows: list[ArchivedEvent]) -> GroupResult:
        """Fold these accounts' rows (any order; all of each account's) with the partition's broadcasts."""
        plan, strict, late = self.plan, self.strict, self.late
        rows.sort(key=_seq)
        res = GroupResult(partition=self.partition)
        members = {r.account_id for r in rows}
        accounts = res.accounts
        part = PartitionState(partition=self.partition)
        calendar = _Calendar(accounts, plan)
        changed = calendar.changed

        def account_of(account_id: str) -> AccountState:
            account = accounts.get(account_id)
            if account is None:
                if account_id not in members:
                    raise AssertionError(f"{account_id} is folded in a group without its events")
                account = accounts[account_id] = AccountState(account_id=account_id, partition=self.partition)
            return account

        for row, decoded in _merged(rows, self.broadcasts):
            event: InputEvent
            if decoded is None:  # an account event
                if row.partition != self.partition:
                    raise ReplayError(f"archive seq {row.seq} of partition {row.partition} read for"
                                      f" {self.partition}")
                event = codec.decode_input(row.body)
                if type(event).BROADCAST or event.account_id != row.account_id:
                    raise ReplayError(f"archive seq {row.seq} ({row.event_id}) is archived for account"
                                      f" {row.account_id} but is {row.event_type} for {event.account_id}")
                reach: list[AccountState] = []
                res.events += 1
            else:
                event = decoded
                reach = calendar.due(event.business_date) if isinstance(event, DayClosed) else list(
                    accounts.values())
                res.days_offered += len(reach) if isinstance(event, DayClosed) else 0
            write = BatchWrite()
            collector = Collector(write)
            try:
                reached = fold_event(event, part, plan, account_of, reach.copy)
                for account, out in reached:
                    collector.add(account, out, row.recorded_at)
            except Rejected as exc:
                if decoded is not None:  # a broadcast: the partition rejects it as a whole, or not at all
                    if row.seq not in self._rejected:
                        raise ReplayError(f"archive seq {row.seq} ({row.event_id}) is rejected for the accounts"
                                          f" of one group only: {exc.reason}") from exc
                    continue
                if strict:  # the processor applied this event, so the same fold must apply it again
                    raise ReplayError(f"archive seq {row.seq} ({row.event_id}) is rejected on replay:"
                                      f" {exc.reason}") from exc
                res.rejected.append(ReplayRejection(row.seq, row.event_id, exc.reason))
                continue
            if decoded is not None and row.seq in self._rejected:
                raise ReplayError(f"archive seq {row.seq} ({row.event_id}) is rejected for the partition but"
                                  " applies to the accounts of a group")
            # only the accounts a fold reached changed (the collector writes no other): their next
            # business date is worked out again
            changed.update(a.account_id for a, _ in reached)
            if any(out.partition_changed for _, out in reached):
                res.partition_changed = True
            apply_discrepancy_changes(res.discrepancies, write)
            for payer, delta in write.payer_unapplied_delta.items():
                res.payer_unapplied[payer] = res.payer_unapplied.get(payer, 0) + delta
                if late is not None and late(row.seq):
                    res.late_payer_unapplied[payer] = res.late_payer_unapplied.get(payer, 0) + delta
        for account_id in accounts:
            on = part.remittances_due.get(account_id)
            if on is not None:
                res.remittances_due[account_id] = on
        if set(part.remittances_due) - set(accounts):
            raise AssertionError("a group's partition state names accounts outside the group")
        self._due.update(res.remittances_due)
        self._changed = self._changed or res.partition_changed
        if rows:
            res.last_seq, res.last_recorded_at = rows[-1].seq, rows[-1].recorded_at
        return res

    def result(self) -> PartitionResult:
        """The partition state after every broadcast, with the remittances due of every group folded."""
        state: PartitionState | None = None
        if self._changed:
            state = self._state
            state.remittances_due = dict(self._due)
        last = self._last
        return PartitionResult(
            partition=self.partition, state=state, broadcasts=len(self.broadcasts),
            rejected=sorted(self._rejected.values(), key=attrgetter("seq")),
            last_seq=None if last is None else last.seq, last_recorded_at=None if last is None else last.recorded_at,
        )


class Consumer(Protocol):
    """Takes each group as it is folded (then it is dropped), and each partition after its groups."""

    def group(self, group: GroupResult) -> None: ...

    def partition(self, part: PartitionResult) -> None: ...


@dataclass(slots=True)
class StreamTotals:
    """What a streamed replay leaves besides the groups: counts, payer cash (every payer touched, zeros
    kept), the partitions' reference data, rejections."""

    accounts: int = 0
    groups: int = 0
    processes: int = 1  # that folded them (replay.parallel)
    account_events: int = 0
    days_offered: int = 0
    partitions: dict[int, PartitionResult] = field(default_factory=dict)
    payer_unapplied: dict[str, int] = field(default_factory=dict)
    rejected: list[ReplayRejection] = field(default_factory=list)  # account events (broadcasts: partitions)
    last_seq: int | None = None
    last_recorded_at: datetime | None = None

    @property
    def rejections(self) -> list[ReplayRejection]:
        """Every rejected event, in seq order."""
        return sorted([*self.rejected, *(r for p in self.partitions.values() for r in p.rejected)],
                      key=attrgetter("seq"))

    @property
    def events_replayed(self) -> int:
        return self.account_events + sum(p.broadcasts for p in self.partitions.values())

    def states(self) -> dict[int, PartitionState]:
        """The partition_state rows."""
        return {p: r.state for p, r in sorted(self.partitions.items()) if r.state is not None}

    def payer_cash(self) -> dict[str, int]:
        return {p: c for p, c in sorted(self.payer_unapplied.items()) if c}

    def add_group(self, group: GroupResult) -> None:
        self.accounts += len(group.accounts)
        self.groups += 1
        self.account_events += group.events
        self.days_offered += group.days_offered
        for payer, cents in group.payer_unapplied.items():
            self.payer_unapplied[payer] = self.payer_unapplied.get(payer, 0) + cents
        self.rejected.extend(group.rejected)
        self._last(group.last_seq, group.last_recorded_at)

    def add_partition(self, part: PartitionResult) -> None:
        """A partition, or one more slice of one (its accounts in another range: the same broadcasts)."""
        seen = self.partitions.get(part.partition)
        if seen is None:
            self.partitions[part.partition] = part
        elif part.state is not None:
            if seen.state is None:
                seen.state = part.state
            else:
                seen.state.remittances_due.update(part.state.remittances_due)
        self._last(part.last_seq, part.last_recorded_at)

    def merge(self, other: StreamTotals) -> None:
        """Totals of another process's partitions (or slices)."""
        self.accounts += other.accounts
        self.groups += other.groups
        self.account_events += other.account_events
        self.days_offered += other.days_offered
        for payer, cents in other.payer_unapplied.items():
            self.payer_unapplied[payer] = self.payer_unapplied.get(payer, 0) + cents
        self.rejected.extend(other.rejected)
        for part in other.partitions.values():
            self.add_partition(part)
        self._last(other.last_seq, other.last_recorded_at)

    def _last(self, seq: int | None, recorded_at: datetime | None) -> None:
        if seq is not None and (self.last_seq is None or seq > self.last_seq):
            self.last_seq, self.last_recorded_at = seq, recorded_at


def stream_archive(
    conn: psycopg.Connection[tuple[Any, ...]], plan: PlanSettings, consumer: Consumer, *,
    partitions: list[int] | None = None, accounts: AccountRange | None = None, strict: bool = True,
    accounts_max: int = ACCOUNTS_MAX, bytes_max: int = BYTES_MAX, late: Callable[[int], bool] | None = None,
    progress: Callable[[int], None] | None = None, totals: StreamTotals | None = None,
) -> StreamTotals:
    """Replay the archive visible to ``conn``'s transaction (REPEATABLE READ: one snapshot), partition by
    partition, a group of accounts at a time; each group goes to ``consumer`` and is dropped. Memory:
    one group, the partition's broadcast events and the totals (payer cash per payer)."""
    totals = totals if totals is not None else StreamTotals()
    for p in archive_partitions(conn) if partitions is None else partitions:
        replay = PartitionReplay(plan, p, read_broadcasts(conn, p), strict=strict, late=late)
        for group in replay.groups(read_accounts(conn, p, accounts=accounts), accounts_max=accounts_max,
                                   bytes_max=bytes_max):
            totals.add_group(group)
            consumer.group(group)
            if progress is not None:
                progress(totals.account_events)
            del group  # dropped before the next group is folded: one group's accounts held at a time, not two
        part = replay.result()
        totals.add_partition(part)
        consumer.partition(part)
    if progress is not None:
        progress(totals.events_replayed)
    return totals


def by_partition(events: Iterable[ArchivedEvent]
                 ) -> Iterator[tuple[int, list[ArchivedEvent], list[ArchivedEvent]]]:
    """Archived events held in memory, laid out as the PostgreSQL reader streams them: per partition,
    its broadcasts in seq order and its account events in (account_id, seq) order."""
    parts: dict[int, tuple[list[ArchivedEvent], list[ArchivedEvent]]] = {}
    for row in events:
        broadcasts, rows = parts.setdefault(row.partition, ([], []))
        (broadcasts if row.account_id == BROADCAST_ACCOUNT else rows).append(row)
    for p in sorted(parts):
        broadcasts, rows = parts[p]
        broadcasts.sort(key=_seq)
        rows.sort(key=lambda r: (r.account_id, r.seq))
        yield p, broadcasts, rows


def replay_streamed(
    events: Iterable[ArchivedEvent], plan: PlanSettings, *, strict: bool = True,
    accounts_max: int = ACCOUNTS_MAX, bytes_max: int = BYTES_MAX,
) -> ReplayResult:
    """The streaming fold of events held in memory, collected into one ``ReplayResult`` (every account:
    for tests and small archives; the PostgreSQL consumers keep one group at a time)."""
    result = ReplayResult()
    for p, broadcasts, rows in by_partition(events):
        replay = PartitionReplay(plan, p, broadcasts, strict=strict)
        for group in replay.groups(rows, accounts_max=accounts_max, bytes_max=bytes_max):
            collect(result, group)
        finish(result, replay.result())
    return result


def collect(result: ReplayResult, group: GroupResult) -> None:
    """Add a group to a ``ReplayResult``."""
    result.accounts.update(group.accounts)
    result.discrepancies.update(group.discrepancies)
    for payer, cents in group.payer_unapplied.items():
        result.payer_unapplied[payer] = result.payer_unapplied.get(payer, 0) + cents
    result.events_replayed += group.events
    result.rejected.extend(group.rejected)
    _last(result, group.last_seq, group.last_recorded_at)


def finish(result: ReplayResult, part: PartitionResult) -> None:
    """Add a partition's reference data (after its groups) to a ``ReplayResult``."""
    if part.state is not None:
        result.partitions[part.partition] = part.state
    result.events_replayed += part.broadcasts
    result.rejected.extend(part.rejected)
    result.rejected.sort(key=attrgetter("seq"))
    _last(result, part.last_seq, part.last_recorded_at)


def _last(result: ReplayResult, seq: int | None, recorded_at: datetime | None) -> None:
    if seq is not None and (result.last_seq is None or seq > result.last_seq):
        result.last_seq, result.last_recorded_at = seq, recorded_at
