"""Fold co-partitioned input topics in timestamp order, as Kafka Streams does for its tasks.

Partition p of every input topic holds the events of the same accounts. Fetches return the topics'
records in no particular order relative to each other, so a business-day event on the small control
topic could overtake bills still queued on the billing topic. The merger hands out the record with
the smallest (timestamp, producer sequence, topic rank, offset) of a partition: the publisher stamps
a sequence because a burst puts many records of several topics into one millisecond.

A stream is not always in that order itself: when two producers write one partition (a loader's burst
and the ledger's relay posting remittance line reports, say), a record can land behind one made after
it, because the producers' deliveries race. A stream's offset order is fixed, so a stream stands for the
smallest record it holds, not for its first one: the merger goes on with the stream whose buffered
records include the smallest, and a business day waits behind a later record of another stream when a
record made before the business day is queued behind that later one.

While one of the partition's streams may still bring records that come first, the partition waits:
- a stream the broker's high-water mark says is behind and that has nothing buffered waits for the
  consumer to bring it;
- a stream behind with records buffered may bring records made up to ``idle_ms`` before its newest one
  (another producer's delivery racing), so a record made later than that waits for the next fetch;
- a caught-up stream may still have records in flight, so a record is handed out only once it is
  ``idle_ms`` old (an event-time watermark with bounded lateness, like Kafka's max.task.idle.ms). A silent
  topic delays folding by at most that much and never stalls it.
A stream whose buffer is full does not hold the partition (it can only be fetched again once the merger
has handed out some of it).

"Caught up" is only as fresh as the fetch that said so: the consumer does not fetch a partition again
while it still holds fetched records of it, so its high-water mark can be older than records of
another topic fetched since. A stream last seen caught up before a candidate record was even made
(plus ``idle_ms``) may hold earlier records, so the partition waits for a newer fetch of it. Producer
and consumer clocks, and producers' delivery, are assumed within ``idle_ms``. A mark fetched before the
stream was (re)assigned is no evidence at all (the consumer keeps a partition's last mark across a
seek): until a fetch made after the assignment reports on it, the stream counts as behind.

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
MergeKey = tuple[int, int, int, int]  # (timestamp, producer sequence, topic rank, offset)

STUCK_IDLE_PERIODS = 10  # fetches reporting a stream behind, without its records, for this many idle_ms
STALL_IDLE_PERIODS = 60  # default stall_ms_max, in idle_ms: a stream not fetched at all for this long
UNRANKED = 99  # the rank of a topic the merger was not told about: after the known ones
_NEVER = float("-inf")  # a bound that holds every record: the stream must be fetched (or given up) first
_ALWAYS = float("inf")


class StreamMerger:
    def __init__(self, topic_rank: dict[str, int], *, idle_ms: int, buffered_max: int,
                 stall_ms_max: int | None = None) -> None:
        self.topic_rank = topic_rank
        self.idle_ms = idle_ms
        self.buffered_max = buffered_max
        self.stall_ms_max = STALL_IDLE_PERIODS * idle_ms if stall_ms_max is None else stall_ms_max
        self._buffers: dict[TopicPartitionKey, deque[Record]] = {}
        # each buffer's smallest keys, increasing: the first is the smallest key the buffer holds (the
        # keys of the records after it that are smaller than every record after them, a monotonic queue)
        self._mins: dict[TopicPartitionKey, deque[MergeKey]] = {}
        self._newest: dict[TopicPartitionKey, int] = {}  # the latest timestamp buffered since the assignment
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
            self._mins[tp] = deque()
            self._newest.pop(tp, None)
            self._next_fetch[tp] = offset
            self._assigned[tp] = now_ms
            self._forget_marks(tp)

    def revoke(self, tps: Iterable[TopicPartitionKey]) -> None:
        for tp in tps:
            self._buffers.pop(tp, None)
            self._mins.pop(tp, None)
            self._newest.pop(tp, None)
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
        mins = self._mins[tp]
        rank = self.topic_rank.get(tp[0], UNRANKED)
        newest = self._newest.get(tp)
        expected = self._next_fetch[tp]
        for r in records:
            if r.offset < expected:
                continue  # fetched again after a seek; already buffered or applied
            buf.append(r)
            key = (r.timestamp, r.seq, rank, r.offset)
            while mins and mins[-1] > key:
                mins.pop()
            mins.append(key)
            if newest is None or r.timestamp > newest:
                newest = r.timestamp
            expected = r.offset + 1
        self._next_fetch[tp] = expected
        if newest is not None:
            self._newest[tp] = newest
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

    def _bound(self, tp: TopicPartitionKey, now_ms: float) -> float:
        """The latest timestamp a record of another stream may have for this stream not to hold it: the
        earliest its records not yet buffered can have been made (see the module docstring)."""
        buf = self._buffers[tp]
        if len(buf) >= self.buffered_max:
            return _ALWAYS  # full: it is fetched again only once some of it is handed out
        behind = self._behind(tp)
        if not buf:
            return _NEVER if behind else self._observed.get(tp, now_ms) - self.idle_ms
        newest = self._newest[tp]
        if behind:
            return newest - self.idle_ms
        return max(self._observed.get(tp, now_ms), newest) - self.idle_ms

    def _given_up(self, tp: TopicPartitionKey, now_ms: float) -> bool:
        """Whether a stream holding its partition back has held it long enough: fetches made
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
        A partition waits while one of its streams may still bring a record that comes first; see the
        module docstring for when and how long.
        """
        out: list[Record] = []
        by_partition: dict[int, list[TopicPartitionKey]] = {}
        for tp in self._buffers:
            by_partition.setdefault(tp[1], []).append(tp)
        for _p, streams in sorted(by_partition.items()):
            if len(out) >= max_records:
                break
            self._take_partition(streams, max_records, now_ms, out)
        return out

    def _take_partition(self, streams: list[TopicPartitionKey], max_records: int, now_ms: float,
                        out: list[Record]) -> None:
        """A k-way merge of the partition's streams by each one's smallest buffered key (a heap), for as
        long as no other stream holds the next record back or every one that does is given up."""
        buffers = [self._buffers[tp] for tp in streams]
        mins = [self._mins[tp] for tp in streams]
        settle_before = now_ms - self.idle_ms
        # What each stream lets through does not change during a take (nothing is fetched meanwhile),
        # except that a stream given up lets everything through. A caught-up stream also holds records
        # younger than idle_ms, however fresh its fetch: those wait for the clock, not for a fetch.
        settles = [not self._behind(tp) for tp in streams]
        bounds = [min(self._bound(tp, now_ms), settle_before) if settles[j] else self._bound(tp, now_ms)
                  for j, tp in enumerate(streams)]
        given = [False] * len(streams)
        heap = [(m[0], i) for i, m in enumerate(mins) if m]
        if not heap:
            return
        heapq.heapify(heap)
        lowest, second = _two_lowest(bounds)
        handed = False
        holding: list[int] = []
        while len(out) < max_records and heap:
            key, i = heap[0]
            ts = key[0]
            floor = second[0] if lowest[1] == i else lowest[0]
            if ts > floor:  # some stream holds it: wait, unless every one holding it is given up
                if ts > settle_before and any(settles[j] for j in range(len(streams)) if j != i):
                    holding = []
                    break  # too young: a caught-up stream may still have earlier records in flight
                holding = [j for j in range(len(streams)) if j != i and not given[j] and ts > bounds[j]]
                given_up = [self._given_up(streams[j], now_ms) for j in holding]  # each one's wait starts now
                if not all(given_up):
                    break  # the consumer brings what may come first
                for j in holding:
                    given[j] = True
                    bounds[j] = settle_before if settles[j] else _ALWAYS
                holding = []
                lowest, second = _two_lowest(bounds)
            buf = buffers[i]
            record = buf.popleft()
            m = mins[i]
            if m[0][3] == record.offset:
                m.popleft()
            out.append(record)
            handed = True
            if m:
                heapq.heapreplace(heap, (m[0], i))
            else:
                heapq.heappop(heap)
        if handed:
            # a stream that held none of what was handed out, and holds nothing now, is not waited for
            # any more: a later wait for it starts afresh
            for j, tp in enumerate(streams):
                if not given[j] and j not in holding and (settles[j] or buffers[j]):
                    self._holding_since.pop(tp, None)


def _two_lowest(bounds: list[float]) -> tuple[tuple[float, int], tuple[float, int]]:
    """The lowest bound with its stream's index, and the lowest of the others."""
    lowest: tuple[float, int] = (_ALWAYS, -1)
    second: tuple[float, int] = (_ALWAYS, -1)
    for j, b in enumerate(bounds):
        if b < lowest[0]:
            lowest, second = (b, j), lowest
        elif b < second[0]:
            second = (b, j)
    return lowest, second
