"""Fold co-partitioned input topics in timestamp order, as Kafka Streams does for its tasks.

Partition p of every input topic holds the events of the same accounts. Fetches return the topics'
records in no particular order relative to each other, so a business-day event on the small control
topic could overtake bills still queued on the billing topic. The merger hands out the record with
the smallest (timestamp, producer sequence, topic rank, offset) of a partition: the publisher stamps
a sequence because a burst puts many records of several topics into one millisecond.

While one of the partition's streams is empty, more of it may be on the way. If the broker's
high-water mark says so, the partition waits for the consumer to bring it; if the stream is caught
up, a record waits until it is ``idle_ms`` old (an event-time watermark with bounded lateness, like
Kafka's max.task.idle.ms). A silent topic delays folding by at most that much and never stalls it.

"Caught up" is only as fresh as the fetch that said so: the consumer does not fetch a partition again
while it still holds fetched records of it, so its high-water mark can be older than records of
another topic fetched since. A stream last seen caught up before a candidate record was even made
(plus ``idle_ms``) may hold earlier records, so the partition waits for a newer fetch of it. Producer
and consumer clocks are assumed within ``idle_ms``. A mark fetched before the stream was (re)assigned
is no evidence at all (the consumer keeps a partition's last mark across a seek): until a fetch made
after the assignment reports on it, the stream counts as behind.

Waiting is bounded by the stream's own fetches, not by how long the loop takes: records fetched but
still queued in the consumer (it hands out a few partitions' records per poll, and does not fetch a
partition again until they are out) are waited for, however slow the loop is. A stream is given up on
once a fetch made ``10 * idle_ms`` after it began to hold its partition still reports it behind without
its records having come (records the consumer never hands out, say), or once it has held the partition
for ``stall_ms_max`` (default ``60 * idle_ms``) without any such fetch. A stuck stream therefore cannot
stall its partition forever.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable

from processor.batch import Record

TopicPartitionKey = tuple[str, int]

STUCK_IDLE_PERIODS = 10  # fetches reporting a stream behind, without its records, for this many idle_ms
STALL_IDLE_PERIODS = 60  # default stall_ms_max, in idle_ms: a stream not fetched at all for this long


class StreamMerger:
    def __init__(self, topic_rank: dict[str, int], *, idle_ms: int, buffered_max: int,
                 stall_ms_max: int | None = None) -> None:
        self.topic_rank = topic_rank
        self.idle_ms = idle_ms
        self.buffered_max = buffered_max
        self.stall_ms_max = STALL_IDLE_PERIODS * idle_ms if stall_ms_max is None else stall_ms_max
        self._buffers: dict[TopicPartitionKey, deque[Record]] = {}
        self._next_fetch: dict[TopicPartitionKey, int] = {}
        self._highwater: dict[TopicPartitionKey, int] = {}
        self._observed: dict[TopicPartitionKey, float] = {}  # when the high-water mark was fetched (ms)
        self._assigned: dict[TopicPartitionKey, float] = {}  # when the stream was (re)started (ms)
        self._holding_since: dict[TopicPartitionKey, float] = {}  # when the stream began to hold its partition

    def assign(self, positions: dict[TopicPartitionKey, int], *, now_ms: float) -> None:
        """Start (or restart) these streams at the given next offsets at ``now_ms``; their buffers are
        dropped, and only a fetch made after ``now_ms`` can say one is caught up."""
        for tp, offset in positions.items():
            self._buffers[tp] = deque()
            self._next_fetch[tp] = offset
            self._assigned[tp] = now_ms
            self._forget_marks(tp)

    def revoke(self, tps: Iterable[TopicPartitionKey]) -> None:
        for tp in tps:
            self._buffers.pop(tp, None)
            self._next_fetch.pop(tp, None)
            self._assigned.pop(tp, None)
            self._forget_marks(tp)

    def _forget_marks(self, tp: TopicPartitionKey) -> None:
        self._highwater.pop(tp, None)
        self._observed.pop(tp, None)
        self._holding_since.pop(tp, None)

    def add(self, tp: TopicPartitionKey, records: list[Record]) -> None:
        if tp not in self._buffers or not records:
            return
        buf = self._buffers[tp]
        expected = self._next_fetch[tp]
        for r in records:
            if r.offset < expected:
                continue  # fetched again after a seek; already buffered or applied
            buf.append(r)
            expected = r.offset + 1
        self._next_fetch[tp] = expected
        if buf:
            self._holding_since.pop(tp, None)  # it delivered: a later wait for it starts afresh

    def set_highwater(self, tp: TopicPartitionKey, highwater: int | None, observed_ms: float | None = None) -> None:
        """The broker's high-water mark of the stream, as of the fetch at ``observed_ms`` (the consumer's
        last poll of it; None: now, as when the mark was just fetched). A mark fetched before the stream
        was assigned is ignored."""
        if highwater is None or tp not in self._buffers:
            return
        if observed_ms is not None and observed_ms < self._assigned[tp]:
            return  # from before the assignment or seek: says nothing about the stream as it is now
        self._highwater[tp] = highwater
        if observed_ms is None:
            self._observed.pop(tp, None)
        else:
            self._observed[tp] = observed_ms

    def buffered(self, tp: TopicPartitionKey) -> int:
        buf = self._buffers.get(tp)
        return len(buf) if buf is not None else 0

    def full(self, tp: TopicPartitionKey) -> bool:
        """Fetching this stream should pause until the merger has handed out some of it."""
        return self.buffered(tp) >= self.buffered_max

    def _behind(self, tp: TopicPartitionKey) -> bool:
        """The broker is known to hold records of this stream that are not buffered yet (or no fetch since
        the assignment has said otherwise)."""
        hw = self._highwater.get(tp)
        return hw is None or self._next_fetch[tp] < hw

    def _given_up(self, tp: TopicPartitionKey, now_ms: float) -> bool:
        """Whether an empty stream holding its partition back has held it long enough: fetches made
        ``STUCK_IDLE_PERIODS * idle_ms`` after it began still report it behind without its records, or
        it has held it for ``stall_ms_max``."""
        since = self._holding_since.setdefault(tp, now_ms)
        if now_ms - since >= self.stall_ms_max:
            return True
        if tp not in self._highwater:
            return False  # not fetched since the assignment
        seen = self._observed.get(tp, now_ms)
        return seen - since >= STUCK_IDLE_PERIODS * self.idle_ms

    def take(self, max_records: int, now_ms: float) -> list[Record]:
        """Up to max_records records, each partition's in merged order.

        ``now_ms`` is wall-clock time in the producers' timebase (record timestamps are CreateTime).
        A partition waits while one of its streams is empty but behind its high-water mark (the consumer
        brings more), or caught up only as of a fetch older than the candidate record; see the module
        docstring for how long. A stream that is empty and caught up may still have records in flight, so
        then a record is handed out only once it is ``idle_ms`` old.
        """
        out: list[Record] = []
        by_partition: dict[int, list[TopicPartitionKey]] = {}
        for tp in self._buffers:
            by_partition.setdefault(tp[1], []).append(tp)
        rank = self.topic_rank
        settle_before = now_ms - self.idle_ms
        for _p, streams in sorted(by_partition.items()):
            self._merge_while_full(streams, max_records, out)
            while len(out) < max_records:
                best: Record | None = None
                best_key: tuple[int, int, int, int] | None = None
                behind: list[TopicPartitionKey] = []
                caught_up: list[TopicPartitionKey] = []
                for tp in streams:
                    buf = self._buffers[tp]
                    if not buf:
                        (behind if self._behind(tp) else caught_up).append(tp)
                        continue
                    head = buf[0]
                    key = (head.timestamp, head.seq, rank.get(head.topic, 99), head.offset)
                    if best_key is None or key < best_key:
                        best, best_key = head, key
                if best is None:
                    break
                if caught_up and best.timestamp > settle_before:
                    break  # too young: a caught-up stream may still have earlier records in flight
                # caught up only as of a fetch made before the candidate existed (plus idle_ms): stale
                holding = behind + [tp for tp in caught_up
                                    if best.timestamp > self._observed.get(tp, now_ms) - self.idle_ms]
                given_up = [self._given_up(tp, now_ms) for tp in holding]  # each one's wait starts now, if not yet
                if not all(given_up):  # the consumer brings what may come first
                    break
                for tp in caught_up:
                    if tp not in holding:
                        self._holding_since.pop(tp, None)
                self._buffers[(best.topic, best.partition)].popleft()
                out.append(best)
        return out

    def _merge_while_full(self, streams: list[TopicPartitionKey], max_records: int, out: list[Record]) -> None:
        """While every stream of the partition holds a record there is nothing to wait for: a k-way merge
        by the same key and tie-break (the first stream) as take's loop, which goes on once one runs dry.

        The common case under load, at O(log streams) per record instead of a pass over every stream."""
        buffers = [self._buffers[tp] for tp in streams]
        if len(out) >= max_records or not all(buffers):
            return
        ranks = [self.topic_rank.get(tp[0], 99) for tp in streams]
        heap = [((b[0].timestamp, b[0].seq, ranks[i], b[0].offset), i) for i, b in enumerate(buffers)]
        heapq.heapify(heap)
        while len(out) < max_records:
            i = heap[0][1]
            buf = buffers[i]
            out.append(buf.popleft())
            if not buf:
                return
            head = buf[0]
            heapq.heapreplace(heap, ((head.timestamp, head.seq, ranks[i], head.offset), i))
