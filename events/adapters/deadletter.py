"""Re-submitting dead letters after a fix: the original bytes and key, to the original topic."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar


class _DeadLetter(Protocol):
    """What a dead_letter row has (projections.model.DeadLetterRow)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def event_id(self) -> str | None: ...
    @property
    def reason(self) -> str: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def raw(self) -> bytes: ...


D = TypeVar("D", bound=_DeadLetter)


@dataclass(frozen=True, slots=True)
class Resubmitted:
    topic: str
    partition: int
    offset: int
    event_id: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset,
                "event_id": self.event_id, "reason": self.reason}


def select(rows: Iterable[D], *, topic: str | None = None, event_id: str | None = None,
           reason: str | None = None) -> list[D]:
    """The dead letters to retry; the same record dead-lettered twice (retried before) is taken once."""
    seen: set[tuple[str, bytes | None, bytes]] = set()
    out = []
    for row in rows:
        if topic is not None and row.topic != topic:
            continue
        if event_id is not None and row.event_id != event_id:
            continue
        if reason is not None and reason.lower() not in row.reason.lower():
            continue
        ident = (row.topic, row.key, row.raw)
        if ident in seen:
            continue
        seen.add(ident)
        out.append(row)
    return out


def resubmit(rows: Iterable[_DeadLetter], publisher: Any) -> list[Resubmitted]:
    """Send each record again exactly as it came. Account records go by key (the partitioner places
    them), broadcast copies (key ``*``) to the partition they came from. The processor folds them
    again: an exact duplicate of an applied event is counted as a duplicate, a record that still
    cannot be applied is dead-lettered again with its (new) reason."""
    done = []
    for row in rows:
        partition = row.partition if row.key == b"*" else None
        publisher.send_raw(row.topic, value=row.raw, key=row.key, partition=partition)
        done.append(Resubmitted(row.topic, row.partition, row.offset, row.event_id, row.reason))
    return done
