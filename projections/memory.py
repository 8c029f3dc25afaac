"""In-memory store: the same contract as the PostgreSQL store, for unit tests and replay."""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta

import msgspec

from processor.state import AccountState, PartitionState, decode_partition
from processor.stored import assemble_account
from projections.chain import GENESIS, ChainedRow, ChainReport, check_heads, link, verify_chain
from projections.model import (
    DISCREPANCIES_STREAM,
    ECHO_STREAMS,
    AccountBalance,
    AccountRow,
    AgencyRow,
    ArchiveRow,
    BatchWrite,
    Counts,
    CoverageRow,
    DeadLetterRow,
    DiscrepancyRow,
    EventStatus,
    FsaRow,
    HistoryEntry,
    MonthRow,
    OutboxRow,
    PositionConflict,
    QueuePage,
    QueueQuery,
    Summary,
    apply_discrepancy_changes,
    discrepancy_agency,
    merge_history,
    next_log_id,
    select_queue,
)


@dataclass(slots=True)
class _OutboxEntry:
    seq: int
    row: OutboxRow
    published_at: datetime | None = None
    published_log_id: str | None = None
    echoed_at: datetime | None = None


def _month_end(month: date) -> date:
    return (month.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)


class MemoryStore:
    """Keeps snapshots as bytes so callers never share mutable state with the store."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.archive: list[ArchiveRow] = []
        self.chain: list[bytes] = []  # archive[i]'s chain hash (projections/chain.py)
        self._chain_heads: dict[int, bytes] = {}
        self._dedupe: dict[str, bytes] = {}
        self._archive_positions: set[tuple[str, str, int, int]] = set()
        self._accounts: dict[str, bytes] = {}  # the headers (processor/state.py encode_header)
        # month key -> (ordinal, state, findings)
        self._account_months: dict[str, dict[str, tuple[int, bytes, bytes | None]]] = {}
        self._account_partition: dict[str, int] = {}
        self._partitions: dict[int, bytes] = {}
        self._months: dict[tuple[str, date], MonthRow] = {}
        self._coverage: dict[str, list[CoverageRow]] = {}
        self._fsa: dict[tuple[str, int, str], FsaRow] = {}
        self._discrepancies: dict[str, DiscrepancyRow] = {}
        self._outbox: list[_OutboxEntry] = []
        self._outbox_by_event: dict[str, _OutboxEntry] = {}
        self._payer_unapplied: dict[str, int] = {}
        self._positions: dict[tuple[str, str, int], int] = {}
        self._counts: dict[tuple[str, str, int], tuple[int, int, int]] = {}
        self._dead: list[DeadLetterRow] = []
        self._dead_positions: set[tuple[str, str, int, int]] = set()
        self._logs: dict[str, tuple[str, bool]] = {}  # log_id -> (cluster_id, retired)
        self._log_topics: dict[tuple[str, str], str] = {}

    def migrate(self) -> None:
        return None

    def close(self) -> None:
        return None

    # -- processor side -----------------------------------------------------------------------

    def positions(self, log_id: str) -> dict[tuple[str, int], int]:
        return {(t, p): n for (lg, t, p), n in self._positions.items() if lg == log_id}

    def load_accounts(self, account_ids: list[str]) -> dict[str, AccountState]:
        return {a: self._assemble(a) for a in account_ids if a in self._accounts}

    def _assemble(self, account_id: str) -> AccountState:
        rows = sorted(self._account_months.get(account_id, {}).items(), key=lambda kv: kv[1][0])
        # a copy of the header, as a server's would be: the loaded account keeps it (processor/stored.py
        # STORED_HEADER), and its estimated size counts it
        header = bytes(bytearray(self._accounts[account_id]))
        return assemble_account(header, [(k, raw, found) for k, (_, raw, found) in rows])

    def load_partitions(self, partitions: list[int]) -> dict[int, PartitionState]:
        return {p: decode_partition(self._partitions[p]) for p in partitions if p in self._partitions}

    def due_accounts(self, partition: int, due_before: date) -> list[str]:
        open_missing = {
            (d.account_id, d.coverage_month) for d in self._discrepancies.values()
            if d.kind == "missing_payment" and d.status == "open"
        }
        out = {
            r.account_id for r in self._months.values()
            if r.partition == partition and r.due_on is not None and r.due_on < due_before
            and r.paid_cents == 0 and r.billed_cents + r.adjusted_cents > 0
            and (r.account_id, r.coverage_month) not in open_missing
        }
        return sorted(out)

    def agency_accounts(self, agency_ids: list[str]) -> list[str]:
        """Accounts whose subscriber has (or had) coverage paid by one of the agencies."""
        wanted = set(agency_ids)
        return sorted({a for a, rows in self._coverage.items()
                       for c in rows if c.relationship == "self" and c.agency_id in wanted})

    def month_accounts(self, partition: int, month_from: date, month_through: date | None) -> list[str]:
        return sorted({
            r.account_id for r in self._months.values()
            if r.partition == partition and r.coverage_month >= month_from
            and (month_through is None or r.coverage_month <= month_through)
        })

    def fsa_open_accounts(self, partition: int, plan_year_through: int) -> list[str]:
        return sorted({
            r.account_id for r in self._fsa.values()
            if self._account_partition.get(r.account_id) == partition and not r.closed
            and r.plan_year <= plan_year_through
        })

    def cycle_accounts(self, partition: int, month: date) -> list[str]:
        last = _month_end(month)
        billed = {r.account_id for r in self._months.values() if r.coverage_month == month and r.billed_cents != 0}
        covered = {a for a, rows in self._coverage.items()
                   if self._account_partition.get(a) == partition and a not in billed
                   and any(c.begin_on <= last and (c.end_on is None or c.end_on >= month) for c in rows)}
        unbilled = {r.account_id for r in self._months.values()
                    if r.partition == partition and r.coverage_month == month and r.billed_cents == 0}
        return sorted(covered | unbilled)

    def find_events(self, dedupe_keys: list[str]) -> dict[str, bytes]:
        return {k: self._dedupe[k] for k in dedupe_keys if k in self._dedupe}

    def archived_body(self, dedupe_key: str) -> bytes | None:
        if dedupe_key not in self._dedupe:
            return None
        return next(row.body for row in reversed(self.archive) if row.dedupe_key == dedupe_key)

    def payer_unapplied_for(self, payer_ids: list[str]) -> dict[str, int]:
        return {p: self._payer_unapplied[p] for p in payer_ids if p in self._payer_unapplied}

    def commit_batch(self, batch: BatchWrite) -> None:
        with self._lock:
            self._check(batch)
            self._apply(batch)

    def _check(self, batch: BatchWrite) -> None:
        """Everything that can fail is checked before anything changes: all or nothing."""
        for adv in batch.positions:
            current = self._positions.get((adv.log_id, adv.topic, adv.partition))
            if current != adv.expected_next:
                raise PositionConflict(
                    f"{adv.topic}[{adv.partition}] is at {current}, the batch expected {adv.expected_next}"
                )
        seen: set[str] = set()
        for row in batch.archive:
            pos = (row.log_id, row.topic, row.partition, row.offset)
            if row.dedupe_key in self._dedupe or row.dedupe_key in seen or pos in self._archive_positions:
                raise PositionConflict(f"event {row.dedupe_key} at {pos} is already archived")
            seen.add(row.dedupe_key)
        for d in batch.dead_letters:
            if (d.log_id, d.topic, d.partition, d.offset) in self._dead_positions:
                raise PositionConflict(f"dead letter at {d.topic}[{d.partition}]@{d.offset} already recorded")

    def _apply(self, batch: BatchWrite) -> None:
        for row in batch.archive:
            chained = link(
                self._chain_heads.get(row.partition, GENESIS), body_hash=row.body_hash, log_id=row.log_id,
                topic=row.topic, partition=row.partition, offset=row.offset, dedupe_key=row.dedupe_key,
                event_id=row.event_id, event_type=row.event_type, account_id=row.account_id,
                effective_on=row.effective_on, occurred_at=row.occurred_at, recorded_at=row.recorded_at,
            )
            self._chain_heads[row.partition] = chained
            self.chain.append(chained)
            self.archive.append(row)
            self._dedupe[row.dedupe_key] = row.body_hash
            self._archive_positions.add((row.log_id, row.topic, row.partition, row.offset))
        frozen = batch.freeze()
        for account_id, partition, snapshot in frozen.snapshots:
            self._accounts[account_id] = snapshot
            self._account_partition[account_id] = partition
        for account_id, month, ordinal, state, findings in frozen.month_states:
            self._account_months.setdefault(account_id, {})[month] = (ordinal, state, findings)
        for r in frozen.months:
            self._months[(r.account_id, r.coverage_month)] = r
        for account_id, rows in frozen.coverage.items():
            self._coverage[account_id] = list(rows)
        for f in frozen.fsa:
            self._fsa[(f.account_id, f.plan_year, f.account_type)] = f
        for p, snapshot in frozen.partitions:
            self._partitions[p] = snapshot
        apply_discrepancy_changes(self._discrepancies, batch)
        for o in batch.outbox:
            entry = _OutboxEntry(seq=len(self._outbox) + 1, row=o)
            self._outbox.append(entry)
            self._outbox_by_event[o.event_id] = entry
        now = datetime.now(UTC)
        for event_id in batch.echoed:
            found = self._outbox_by_event.get(event_id)
            if found is not None and found.row.stream in ECHO_STREAMS and found.echoed_at is None:
                found.echoed_at = now
        for payer, delta in batch.payer_unapplied_delta.items():
            self._payer_unapplied[payer] = self._payer_unapplied.get(payer, 0) + delta
        for adv in batch.positions:
            key = (adv.log_id, adv.topic, adv.partition)
            self._positions[key] = adv.next_offset
            a, du, de = self._counts.get(key, (0, 0, 0))
            self._counts[key] = (a + adv.applied, du + adv.duplicates, de + adv.dead_lettered)
        for dead in batch.dead_letters:
            self._dead.append(dead)
            self._dead_positions.add((dead.log_id, dead.topic, dead.partition, dead.offset))

    # -- relay side ---------------------------------------------------------------------------

    def outbox_pending(
        self, limit: int, *, log_id: str | None = None, republish_before: datetime | None = None,
    ) -> list[tuple[int, OutboxRow]]:
        never = [(e.seq, e.row) for e in self._outbox if e.published_at is None and e.echoed_at is None][:limit]
        if log_id is None or len(never) >= limit:
            return never
        again = [
            (e.seq, e.row) for e in self._outbox
            if e.published_at is not None and e.row.stream in ECHO_STREAMS and e.echoed_at is None
            and (e.published_log_id != log_id or (republish_before is not None and e.published_at < republish_before))
        ]
        return sorted(never + again[: limit - len(never)], key=lambda pair: pair[0])

    def mark_published(self, seqs: list[int], *, log_id: str | None = None) -> None:
        wanted = set(seqs)
        now = datetime.now(UTC)
        for e in self._outbox:
            if e.seq in wanted and (e.published_at is None or (e.row.stream in ECHO_STREAMS and e.echoed_at is None)):
                e.published_at, e.published_log_id = now, log_id

    def outbox_undelivered(self, limit: int) -> list[tuple[int, OutboxRow]]:
        return [(e.seq, e.row) for e in self._outbox if e.row.stream in ECHO_STREAMS and e.echoed_at is None][:limit]

    # -- log identity -------------------------------------------------------------------------

    def current_log(self, cluster_id: str) -> str:
        return next((lg for lg, (c, retired) in self._logs.items() if c == cluster_id and not retired), cluster_id)

    def start_new_log(self, cluster_id: str, reason: str) -> tuple[str, str]:
        with self._lock:
            old = self.current_log(cluster_id)
            self._logs[old] = (cluster_id, True)
            new = next_log_id(cluster_id, [lg for lg, (c, _) in self._logs.items() if c == cluster_id])
            self._logs[new] = (cluster_id, False)
            return old, new

    def log_topics(self, log_id: str) -> dict[str, str]:
        return {t: i for (lg, t), i in self._log_topics.items() if lg == log_id}

    def record_log_topics(self, log_id: str, topic_ids: dict[str, str]) -> None:
        for topic, topic_id in topic_ids.items():
            self._log_topics.setdefault((log_id, topic), topic_id)

    # -- queries ------------------------------------------------------------------------------

    def balance(self, account_id: str) -> AccountBalance | None:
        if account_id not in self._accounts:
            return None
        months = sorted((r for (a, _), r in self._months.items() if a == account_id),
                        key=lambda r: r.coverage_month)
        return AccountBalance(
            account_id=account_id,
            coverages=list(self._coverage.get(account_id, [])),
            months=months,
            open_discrepancies=self.discrepancies(open_only=True, account_id=account_id),
        )

    def discrepancies(
        self, *, open_only: bool = False, kind: str | None = None, account_id: str | None = None,
        limit: int = 1000,
    ) -> list[DiscrepancyRow]:
        rows = [
            d for d in self._discrepancies.values()
            if (not open_only or d.status == "open") and (kind is None or d.kind == kind)
            and (account_id is None or d.account_id == account_id)
        ]
        rows.sort(key=lambda d: (d.account_id, d.coverage_month or date.min, d.kind, d.discrepancy_id))
        return [replace(d) for d in rows[:limit]]  # copies: callers never share mutable rows with the store

    def counts(self) -> Counts:
        applied = sum(c[0] for c in self._counts.values())
        dup = sum(c[1] for c in self._counts.values())
        dead = sum(c[2] for c in self._counts.values())
        return Counts(received=applied + dup + dead, applied=applied, duplicates=dup, dead_lettered=dead)

    def summary(self) -> Summary:
        months = list(self._months.values())
        opened: dict[str, int] = {}
        still_open: dict[str, int] = {}
        for d in self._discrepancies.values():
            opened[d.kind] = opened.get(d.kind, 0) + 1
            if d.status == "open":
                still_open[d.kind] = still_open.get(d.kind, 0) + 1
        members = {(c.account_id, c.member_id) for rows in self._coverage.values() for c in rows}
        return Summary(
            members=len(members),
            accounts=sum(1 for rows in self._coverage.values() if rows),
            coverage_months=sum(1 for r in months if r.expected_cents is not None or r.billed_cents),
            billed_cents=sum(r.billed_cents for r in months),
            adjusted_cents=sum(r.adjusted_cents for r in months),
            paid_cents=sum(r.paid_cents for r in months),
            outstanding_cents=sum(r.balance_cents for r in months if r.balance_cents > 0),
            credits_cents=-sum(r.balance_cents for r in months if r.balance_cents < 0),
            unapplied_cents=sum(self._payer_unapplied.values()),
            discrepancies_opened_by_kind=dict(sorted(opened.items())),
            discrepancies_open_by_kind=dict(sorted(still_open.items())),
            counts=self.counts(),
        )

    def archive_count(self) -> int:
        return len(self.archive)

    def dead_letters(self, limit: int = 1000) -> list[DeadLetterRow]:
        return self._dead[:limit]

    def verify_archive(self) -> ChainReport:
        """Recompute the hash chain of every partition over the whole archive."""
        return check_heads(verify_chain(
            ChainedRow(i, r.log_id, r.topic, r.partition, r.offset, r.dedupe_key, r.event_id, r.event_type,
                       r.account_id, r.effective_on, r.occurred_at, r.recorded_at, r.body, r.body_hash, h)
            for i, (r, h) in enumerate(zip(self.archive, self.chain, strict=True), start=1)
        ), self._chain_heads)

    def fsa_accounts(self, account_id: str) -> list[FsaRow]:
        return [r for k, r in sorted(self._fsa.items()) if k[0] == account_id]

    def payer_unapplied(self) -> dict[str, int]:
        return {p: c for p, c in sorted(self._payer_unapplied.items()) if c}

    def member_months(self, limit: int = 1000) -> list[MonthRow]:
        """Member-month rows of every account, by account and month."""
        return [r for _, r in sorted(self._months.items())][:limit]

    # -- the workbench's reads ----------------------------------------------------------------

    def _own_agency(self, account_id: str) -> str | None:
        own = [c for c in self._coverage.get(account_id, []) if c.relationship == "self"]
        return max(own, key=lambda c: (c.begin_on, c.agency_id)).agency_id if own else None

    def _account_agency(self, account_id: str) -> str | None:
        if account_id.startswith("payer:"):
            return account_id.removeprefix("payer:")
        return self._own_agency(account_id)

    def _with_agency(self, d: DiscrepancyRow) -> DiscrepancyRow:
        return replace(d, agency_id=discrepancy_agency(d.account_id, self._own_agency(d.account_id), d.payer_id))

    def discrepancy_queue(self, query: QueueQuery) -> QueuePage:
        return select_queue((self._with_agency(d) for d in self._discrepancies.values()), query)

    def discrepancy(self, discrepancy_id: str) -> DiscrepancyRow | None:
        stored = self._discrepancies.get(discrepancy_id)
        return None if stored is None else self._with_agency(stored)

    def account_history(self, account_id: str, *, limit: int = 10_000) -> list[HistoryEntry]:
        home = self._account_partition.get(account_id)
        causes: dict[str, tuple[bool, int, datetime]] = {}  # a broadcast cause: its copy on the account's partition
        archived: list[HistoryEntry] = []
        for seq, row in enumerate(self.archive, start=1):
            best = causes.get(row.event_id)
            if best is None or (row.partition == home and not best[0]):
                causes[row.event_id] = (row.partition == home, seq, row.recorded_at)
            if row.account_id == account_id and len(archived) < limit:
                archived.append(HistoryEntry(
                    seq=seq, event_id=row.event_id, event_type=row.event_type, account_id=row.account_id,
                    effective_on=row.effective_on, occurred_at=row.occurred_at, recorded_at=row.recorded_at,
                    body=row.body,
                ))
        emitted: list[tuple[int, bytes, int | None, datetime | None]] = []
        for entry in self._outbox:
            seq, o = entry.seq, entry.row
            if o.key != account_id or o.stream != DISCREPANCIES_STREAM or len(emitted) >= limit:
                continue
            cause = msgspec.json.decode(o.body).get("causation_id")
            found = causes.get(cause) if cause else None
            emitted.append((seq, o.body, found[1] if found else None, found[2] if found else None))
        return merge_history(archived, emitted, account_id, limit)

    def event_status(self, event_ids: list[str]) -> dict[str, EventStatus]:
        wanted = set(event_ids)
        out: dict[str, EventStatus] = {}
        for d in self._dead:
            if d.event_id in wanted:
                out[d.event_id] = EventStatus(event_id=d.event_id, state="dead_lettered", recorded_at=d.recorded_at,
                                              reason=d.reason, field=d.field)
        applied: set[str] = set()
        for row in self.archive:
            if row.event_id in wanted and row.event_id not in applied:
                applied.add(row.event_id)
                out[row.event_id] = EventStatus(event_id=row.event_id, state="applied", recorded_at=row.recorded_at,
                                                account_id=row.account_id)
        return out

    def _balance_of(self, account_id: str, positive_only: bool) -> int:
        return sum(r.balance_cents for (a, _), r in self._months.items()
                   if a == account_id and (r.balance_cents > 0 or not positive_only))

    def agencies(self) -> list[AgencyRow]:
        accounts: dict[str, int] = {}
        owed: dict[str, int] = {}
        for account_id in self._accounts:
            agency = self._account_agency(account_id)
            if agency is not None:
                accounts[agency] = accounts.get(agency, 0) + 1
                owed[agency] = owed.get(agency, 0) + self._balance_of(account_id, True)
        open_n: dict[str, int] = {}
        for d in self._discrepancies.values():
            if d.status == "open":
                agency = self._with_agency(d).agency_id
                if agency is not None:
                    open_n[agency] = open_n.get(agency, 0) + 1
        return [AgencyRow(agency_id=a, accounts=accounts.get(a, 0), open_discrepancies=open_n.get(a, 0),
                          outstanding_cents=owed.get(a, 0)) for a in sorted(accounts.keys() | open_n.keys())]

    def accounts(self, *, prefix: str = "", agency_id: str | None = None, limit: int = 200) -> list[AccountRow]:
        out = []
        for account_id in sorted(self._accounts):
            agency = self._account_agency(account_id)
            if not account_id.startswith(prefix) or (agency_id is not None and agency != agency_id):
                continue
            out.append(AccountRow(
                account_id=account_id, agency_id=agency, balance_cents=self._balance_of(account_id, False),
                open_discrepancies=sum(1 for d in self._discrepancies.values()
                                       if d.account_id == account_id and d.status == "open"),
            ))
            if len(out) >= limit:
                break
        return out
