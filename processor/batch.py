"""One batch of input records to one store transaction. Knows nothing of Kafka's client API.

decode and validate -> drop exact duplicates -> dead-letter conflicts, invalid and unappliable records
-> fold with the pure functions -> BatchWrite (archive, projections, discrepancies, outbox, positions).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

import msgspec
from kafka.partitioner.default import murmur2

from events import codec
from events.topics import TopicSettings, topic_types
from events.types import (
    BillingCycleClosed,
    DayClosed,
    InputEvent,
    OutputEvent,
    PaymentReceived,
    RatePublished,
    RemittanceFunded,
    RemittanceLinePosted,
    tag_of,
)
from processor import bounds, footprint
from processor.clock import BusinessClock
from processor.collect import Collector
from processor.rules.base import Rejected
from processor.rules.days import candidate_cutoff
from processor.rules.fold import Reached, fold_event
from processor.rules.fsa import closable_through
from processor.settings import PlanSettings
from processor.state import AccountState, PartitionState
from projections.fold_state import remember_loaded_months
from projections.model import ArchiveRow, BatchWrite, DeadLetterRow, LedgerStore, PositionAdvance


class Record(msgspec.Struct, frozen=True, gc=False):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int = 0  # the record's CreateTime (ms); orders co-partitioned topics
    seq: int = 0  # the producer's send sequence (ledger-seq header): orders records within a millisecond


@dataclass(slots=True)
class BatchResult:
    write: BatchWrite
    received: int = 0
    applied: int = 0
    duplicates: int = 0
    skipped_already_applied: int = 0
    emitted: list[OutputEvent] = field(default_factory=list)


# What the ledger posts itself through the outbox (processor/collect.py, the payments topic): seen coming
# back, the outbox row is delivered (the relay re-publishes what never came back, issue 12).
ECHOED_TYPES = (PaymentReceived, RemittanceLinePosted, RemittanceFunded)

def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (murmur2), so a record's partition can be checked against its key."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class BatchProcessor:
    """Holds the fold state of the partitions this worker owns; the store holds the record."""

    def __init__(
        self,
        store: LedgerStore,
        *,
        log_id: str,
        plan: PlanSettings,
        topics: TopicSettings,
        partitions: int,
        clock: Callable[[], datetime],
        account_cache_max: int = 200_000,
        record_bytes_max: int = codec.RECORD_BYTES_MAX,
        account_cache_bytes_max: int = 160 * 1024 * 1024,
        key_partition_cache_max: int = 100_000,
        fold: Callable[..., Reached] = fold_event,
    ) -> None:
        self.store = store
        self._fold_event = fold  # the one fold; bench/throughput.py's ceiling passes a no-op
        self.log_id = log_id
        self.plan = plan
        self.partitions = partitions
        self.clock = clock
        self.account_cache_max = account_cache_max
        self.record_bytes_max = record_bytes_max
        # The account cache is bounded by count and by estimated bytes (processor/footprint.py), the
        # key -> partition memo by count; neither ever grows with the ledger's history.
        self.account_cache_bytes_max = account_cache_bytes_max
        self.key_partition_cache_max = key_partition_cache_max
        self._account_bytes: dict[str, int] = {}
        self.cached_bytes = 0
        self._types = topic_types(topics)
        self._accounts: OrderedDict[str, AccountState] = OrderedDict()
        self._parts: dict[int, PartitionState] = {}
        self._positions: dict[tuple[str, int], int] = {}
        self._key_partition: dict[bytes, int] = {}
        # Batches handed out by process() whose commit has not been confirmed yet, oldest first.
        # Their dedupe keys count as known and their accounts stay cached, because the store
        # cannot show them until the commit lands.
        self._inflight: list[BatchResult] = []
        # (partition, event id) of each broadcast of the batch -> the accounts the store says it may change
        self._candidates: dict[tuple[int, str], set[str]] = {}
        self.reset()

    # -- lifecycle ------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget cached state and uncommitted batches; the next batch reloads from the store."""
        self._accounts.clear()
        self._account_bytes.clear()
        self.cached_bytes = 0
        self._parts.clear()
        self._inflight.clear()
        self._positions = self.store.positions(self.log_id)

    def positions(self) -> dict[tuple[str, int], int]:
        return dict(self._positions)

    def revoke(self, partitions: Iterable[int]) -> None:
        if self._inflight:
            # A rebalance while a commit is in flight: start again from what the store has.
            self.reset()
            return
        gone = set(partitions)
        for account_id in [a for a, s in self._accounts.items() if s.partition in gone]:
            del self._accounts[account_id]
            self.cached_bytes -= self._account_bytes.pop(account_id, 0)
        for p in gone:
            self._parts.pop(p, None)
        self._positions = self.store.positions(self.log_id)

    # -- the batch --------------------------------------------------------------------------------

    def process(self, records: list[Record]) -> BatchResult:
        """Fold a batch into a BatchWrite. The caller commits it, or calls reset() if that fails."""
        now = self.clock()
        write = BatchWrite()
        collector = Collector(write)
        result = BatchResult(write=write, emitted=collector.emitted)
        counts: dict[tuple[str, int], list[int]] = {}  # (topic, partition) -> [applied, dup, dead]
        last_offset: dict[tuple[str, int], int] = {}
        decoded: list[tuple[Record, InputEvent, bytes, bytes, str]] = []

        def dead(rec: Record, reason: str, field_name: str | None, event_id: str | None) -> None:
            # reason and field may quote the record (a decoder's message): escaped and bounded for text columns
            write.dead_letters.append(DeadLetterRow(
                log_id=self.log_id, topic=rec.topic, partition=rec.partition, offset=rec.offset,
                event_id=event_id, reason=bounds.printable(reason),
                field=None if field_name is None else bounds.printable(field_name, 200), key=rec.key,
                raw=rec.value or b"", recorded_at=now,
            ))
            counts[(rec.topic, rec.partition)][2] += 1

        # 1. decode and validate, in record order
        for rec in records:
            tp = (rec.topic, rec.partition)
            stored = self._positions.get(tp)
            if stored is not None and rec.offset < stored:
                result.skipped_already_applied += 1  # redelivered after a restart or rebalance
                continue
            assert rec.offset >= last_offset.get(tp, -1), f"{tp} delivered out of order"
            last_offset[tp] = rec.offset
            counts.setdefault(tp, [0, 0, 0])
            result.received += 1
            reason, field_name, event = self._validate(rec)
            if event is None:
                dead(rec, reason or "invalid", field_name, None)
                continue
            if event.causation_id is not None and isinstance(event, ECHOED_TYPES):
                write.echoed.append(event.event_id)  # what the ledger posted itself may have come back
            body = codec.encode(event)
            dkey = f"{event.event_id}@p{rec.partition}" if type(event).BROADCAST else event.event_id
            decoded.append((rec, event, body, codec.body_hash(body), dkey))

        # 2. what the archive and the batches still in flight already hold
        known = self.store.find_events([d[4] for d in decoded]) if decoded else {}
        for earlier in self._inflight:
            for row in earlier.write.archive:
                known.setdefault(row.dedupe_key, row.body_hash)

        # 3. load what the fold needs
        self._load([item[1] for item in decoded], [item[0].partition for item in decoded])
        payer_base = self._payer_bases([item[1] for item in decoded])

        # 4. fold, in record order; a duplicate is judged against what was accepted before it, so a
        # resend of an event the fold rejected earlier in the batch is folded, not skipped
        business = self.clock if isinstance(self.clock, BusinessClock) else None
        for rec, event, body, digest, dkey in decoded:
            if business is not None:  # the demo's: each event recorded at the business time reached with it
                now = business.advance((event.occurred_at,))
            previous = known.get(dkey)
            if previous is not None and previous != digest and self._same_as_archived(dkey, body):
                previous = digest  # accepted before a field with a default was added: the same event
            if previous == digest:
                counts[(rec.topic, rec.partition)][1] += 1
                result.duplicates += 1
                continue
            if previous is not None:
                dead(rec, f"conflicting duplicate: event_id {event.event_id} was already accepted with a"
                          f" different body (sha256 {previous.hex()[:16]}, this one {digest.hex()[:16]})",
                     "event_id", event.event_id)
                continue
            too_much = bounds.sum_rejection(
                self._accounts.get(event.account_id), event,
                payer_base.get(event.payer_id, 0) + abs(write.payer_unapplied_delta.get(event.payer_id, 0))
                if isinstance(event, PaymentReceived) else 0,
            )
            if too_much is not None:
                dead(rec, too_much[0], too_much[1], event.event_id)
                continue
            try:
                self._fold(rec.partition, event, collector, now)
            except Rejected as exc:
                dead(rec, exc.reason, exc.field, event.event_id)
                continue
            known[dkey] = digest
            counts[(rec.topic, rec.partition)][0] += 1
            result.applied += 1
            write.archive.append(ArchiveRow(
                log_id=self.log_id, topic=rec.topic, partition=rec.partition, offset=rec.offset,
                dedupe_key=dkey, event_id=event.event_id, event_type=tag_of(type(event)),
                account_id=event.account_id, effective_on=event.effective_on, occurred_at=event.occurred_at,
                recorded_at=now, body=body, body_hash=digest,
            ))

        # 5. positions: every consumed offset moves the position, whatever became of the record.
        # They move optimistically so the next batch can be folded while this one commits.
        for tp, last in last_offset.items():
            applied, dup, dl = counts[tp]
            write.positions.append(PositionAdvance(
                log_id=self.log_id, topic=tp[0], partition=tp[1], expected_next=self._positions.get(tp),
                next_offset=last + 1, applied=applied, duplicates=dup, dead_lettered=dl,
            ))
            self._positions[tp] = last + 1
        # 6. freeze: the next batch folds into the same objects while this one commits
        write.freeze()
        self._inflight.append(result)
        return result

    def committed(self, result: BatchResult) -> None:
        """The store accepted the (oldest in-flight) batch: trim the cache of accounts no batch needs."""
        if not self._inflight or self._inflight[0] is not result:
            # reset() ran while the commit was in flight (a rebalance): state is reloaded from the store
            return
        self._inflight.pop(0)
        sizes = self._account_bytes
        dirty = result.write.dirty_months
        for account_id, account in result.write.accounts.items():  # they changed: estimate them again
            if account_id in sizes:
                size = footprint.account_bytes(account, dirty.get(account_id, ()))
                self.cached_bytes += size - sizes[account_id]
                sizes[account_id] = size
        protected = {a for r in self._inflight for a in r.write.accounts}
        while len(self._accounts) > self.account_cache_max or self.cached_bytes > self.account_cache_bytes_max:
            oldest = next(iter(self._accounts), None)
            if oldest is None or oldest in protected:
                break
            self._accounts.popitem(last=False)
            self.cached_bytes -= sizes.pop(oldest, 0)

    # -- helpers --------------------------------------------------------------------------------

    def _validate(self, rec: Record) -> tuple[str | None, str | None, InputEvent | None]:
        if rec.value is None:
            return "empty record (no value)", None, None
        try:
            event = codec.decode_input(rec.value, bytes_max=self.record_bytes_max)
        except codec.EventDecodeError as exc:
            return f"undecodable: {exc.reason}", exc.field, None
        tag = tag_of(type(event))
        allowed = self._types.get(rec.topic)
        if allowed is not None and tag not in allowed:
            return f"{tag} does not belong on topic {rec.topic}", "type", None
        if not type(event).BROADCAST:
            if rec.key != event.account_id.encode():
                return f"record key {rec.key!r} is not the account_id {event.account_id!r}", "account_id", None
            expected = self._key_partition.get(rec.key)
            if expected is None:
                if len(self._key_partition) >= self.key_partition_cache_max:  # bounded: forget the oldest
                    del self._key_partition[next(iter(self._key_partition))]
                expected = self._key_partition[rec.key] = partition_for(rec.key, self.partitions)
            if expected != rec.partition:
                return (f"account {event.account_id} belongs on partition {expected}, not {rec.partition}"
                        " (partition = murmur2 of the key, the Java client's default; librdkafka producers"
                        " need partitioner=murmur2_random)", "account_id", None)
        return None, None, event

    def _payer_bases(self, events: list[InputEvent]) -> dict[str, int]:
        """An upper bound of each paying payer's unapplied cash (its magnitude) before this batch: the
        store's total plus the batches whose commit is still in flight (bounds.sum_rejection)."""
        payers = sorted({e.payer_id for e in events if isinstance(e, PaymentReceived)})
        if not payers:
            return {}
        base = {p: abs(c) for p, c in self.store.payer_unapplied_for(payers).items()}
        for earlier in self._inflight:
            for p, delta in earlier.write.payer_unapplied_delta.items():
                if p in base or p in payers:
                    base[p] = base.get(p, 0) + abs(delta)
        return base

    def _load(self, events: list[InputEvent], partitions: list[int]) -> None:
        missing_parts = sorted({p for p in partitions if p not in self._parts})
        if missing_parts:
            loaded = self.store.load_partitions(missing_parts)
            for p in missing_parts:
                self._parts[p] = loaded.get(p) or PartitionState(partition=p)
        wanted = {e.account_id for e in events if not type(e).BROADCAST}
        self._candidates.clear()
        for e, p in zip(events, partitions, strict=True):
            if not type(e).BROADCAST:
                continue
            # Who a broadcast may change, from the store's indexes over what is committed (the accounts
            # of batches not committed yet are added when it is folded): never a scan of every account.
            found: set[str] = set()
            if isinstance(e, BillingCycleClosed):
                found.update(self.store.cycle_accounts(p, e.cycle_month))
            elif isinstance(e, RatePublished):
                found.update(self.store.month_accounts(p, e.month_from, e.month_through))
            elif isinstance(e, DayClosed):
                found.update(self.store.due_accounts(p, candidate_cutoff(e.business_date, self.plan)))
                # payer accounts whose remittances a day past their lines' window judges (index: that last day)
                found.update(a for a, due in self._parts[p].remittances_due.items() if due < e.business_date)
                found.update(self.store.fsa_open_accounts(p, closable_through(e.business_date, self.plan.fsa)))
            self._candidates[(p, e.event_id)] = found
            wanted.update(found)
        self._ensure_accounts(wanted, dict(zip((e.account_id for e in events), partitions, strict=True)))

    def _ensure_accounts(self, wanted: set[str], partition_of: dict[str, int]) -> None:
        missing = [a for a in wanted if a not in self._accounts]
        if not missing:
            for a in wanted:
                self._accounts.move_to_end(a)
            return
        loaded = self.store.load_accounts(missing)
        for a in missing:
            state = loaded.get(a)
            if state is None:
                state = AccountState(account_id=a, partition=partition_of[a])
            else:
                remember_loaded_months(state)
            self._accounts[a] = state
            size = self._account_bytes[a] = footprint.account_bytes(state)
            self.cached_bytes += size
        for a in wanted:
            self._accounts.move_to_end(a)

    def _same_as_archived(self, dkey: str, body: bytes) -> bool:
        """Is the body accepted under ``dkey`` this very event once decoded (upcast, new fields at their
        defaults) and encoded again? Only asked when the hashes differ, which is rare: an upstream resend
        after an upgrade added a field, or a real conflict."""
        earlier = next((row.body for batch in self._inflight for row in batch.write.archive
                        if row.dedupe_key == dkey), None)
        archived = earlier if earlier is not None else self.store.archived_body(dkey)
        if archived is None:
            return False
        try:
            return codec.encode(codec.decode_input(archived)) == body
        except codec.EventDecodeError:  # archived under rules since tightened: not provably the same
            return False

    def _fold(self, partition: int, event: InputEvent, collector: Collector, recorded_at: datetime) -> None:
        """The one fold, on this worker's cached state; the outcomes go to the batch's collector."""
        part = self._parts[partition]
        reached = self._fold_event(
            event, part, self.plan, self._cached_account,
            lambda: self._reachable(partition, event, collector),
        )
        if type(event).BROADCAST or any(out.partition_changed for _, out in reached):
            collector.write.partitions[partition] = part
        for account, out in reached:
            if account.partition != partition:
                raise AssertionError(f"account {account.account_id} cached for partition {account.partition}")
            collector.add(account, out, recorded_at)

    def _reachable(self, partition: int, event: InputEvent, collector: Collector) -> list[AccountState]:
        """The accounts of the partition a broadcast may change, in account order: the store's candidates
        for it, and every account of the partition a batch changed that the store does not show yet."""
        ids = set(self._candidates.get((partition, event.event_id), ()))
        for write in [*(r.write for r in self._inflight), collector.write]:
            ids.update(a for a, s in write.accounts.items() if s.partition == partition)
        return [self._accounts[a] for a in sorted(ids)]

    def _cached_account(self, account_id: str) -> AccountState:
        return self._accounts[account_id]  # _load put every account of the batch in the cache
