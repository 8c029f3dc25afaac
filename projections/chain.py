"""Tamper evidence: each archived event carries a hash chained to the previous event of its partition.

    chain_hash = sha256(previous chain_hash of the partition || body_hash || sha256(fields))

``fields`` are the row's columns other than ``seq`` (which the database assigns), joined by US (0x1f):
log_id, topic, partition, offset, dedupe_key, event_id, event_type, account_id, effective_on (ISO),
occurred_at and recorded_at (microseconds since the Unix epoch). The first event of a partition chains
to 32 zero bytes. Migration 0002 computes the same function in SQL for rows archived before it, so a
change here must change both (a test compares them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import msgspec

GENESIS = bytes(32)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def epoch_micros(moment: datetime) -> int:
    """Microseconds since the epoch; a naive time is UTC (as the store's UTC session reads it)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MICRO


def link(
    previous: bytes, *, body_hash: bytes, log_id: str, topic: str, partition: int, offset: int,
    dedupe_key: str, event_id: str, event_type: str, account_id: str, effective_on: date,
    occurred_at: datetime, recorded_at: datetime,
) -> bytes:
    """One link of a partition's chain."""
    fields = "\x1f".join((
        log_id, topic, str(partition), str(offset), dedupe_key, event_id, event_type, account_id,
        effective_on.isoformat(), str(epoch_micros(occurred_at)), str(epoch_micros(recorded_at)),
    ))  # fmt: skip
    return hashlib.sha256(previous + body_hash + hashlib.sha256(fields.encode()).digest()).digest()


class ChainedRow(msgspec.Struct, frozen=True, gc=False):
    """An archive row as the chain sees it (every column but seq, plus the body to re-hash)."""

    seq: int
    log_id: str
    topic: str
    partition: int
    offset: int
    dedupe_key: str
    event_id: str
    event_type: str
    account_id: str
    effective_on: date
    occurred_at: datetime
    recorded_at: datetime
    body: bytes
    body_hash: bytes
    chain_hash: bytes | None


@dataclass(frozen=True, slots=True)
class BrokenLink:
    seq: int
    partition: int
    event_id: str
    reason: str
    kind: str = "chain"  # "chain": a link or body does not match; "head": the recorded head is not the last link


@dataclass(frozen=True, slots=True)
class ChainReport:
    events_checked: int
    first_broken: BrokenLink | None
    partitions: int
    heads: dict[int, bytes] = field(default_factory=dict)  # each partition's last stored link
    last: dict[int, tuple[int, str]] = field(default_factory=dict)  # each partition's last (seq, event_id)

    @property
    def intact(self) -> bool:
        return self.first_broken is None


def verify_chain(rows: Iterable[ChainedRow]) -> ChainReport:
    """Recompute every link in seq order and name the first row whose body or chain does not match.

    Every row is read (``events_checked`` counts them all); after a break the chain goes on from the
    stored hash, so one altered row is reported once, not as every later link.
    """
    heads: dict[int, bytes] = {}
    last: dict[int, tuple[int, str]] = {}
    checked = 0
    first: BrokenLink | None = None
    for row in rows:
        checked += 1
        previous = heads.get(row.partition, GENESIS)
        expected = link(
            previous, body_hash=row.body_hash, log_id=row.log_id, topic=row.topic, partition=row.partition,
            offset=row.offset, dedupe_key=row.dedupe_key, event_id=row.event_id, event_type=row.event_type,
            account_id=row.account_id, effective_on=row.effective_on, occurred_at=row.occurred_at,
            recorded_at=row.recorded_at,
        )
        reason = None
        if hashlib.sha256(row.body).digest() != row.body_hash:
            reason = "body does not match its body_hash"
        elif row.chain_hash is None:
            reason = "no chain hash"
        elif row.chain_hash != expected:
            reason = "chain hash does not match the previous link and this row"
        if reason is not None and first is None:
            first = BrokenLink(row.seq, row.partition, row.event_id, reason)
        heads[row.partition] = row.chain_hash if row.chain_hash is not None else expected
        last[row.partition] = (row.seq, row.event_id)
    return ChainReport(checked, first, len(heads), heads, last)


def check_heads(report: ChainReport, recorded: dict[int, bytes]) -> ChainReport:
    """Compare each partition's recorded chain head with the last link found: a missing tail (rows
    deleted after the last one that remains) shows here, where the links themselves still agree."""
    if report.first_broken is not None:
        return report
    for partition in sorted(recorded.keys() | report.heads.keys()):
        if recorded.get(partition) == report.heads.get(partition):
            continue
        seq, event_id = report.last.get(partition, (0, ""))
        reason = ("the recorded chain head is not this partition's last link: events after this one are"
                  " missing, or the head was altered")
        broken = BrokenLink(seq, partition, event_id, reason, "head")
        return ChainReport(report.events_checked, broken, report.partitions, report.heads, report.last)
    return report
