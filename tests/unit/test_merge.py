"""processor/merge.py: co-partitioned topics are folded in the order their records were made."""

from __future__ import annotations

from processor.batch import Record
from processor.merge import StreamMerger

A, B = ("billing", 0), ("control", 0)
IDLE_MS = 1000


def _records(tp: tuple[str, int], start: int, stop: int, ts0: int) -> list[Record]:
    return [Record(tp[0], tp[1], o, None, b"{}", timestamp=ts0 + o) for o in range(start, stop)]


def _merger() -> StreamMerger:
    merger = StreamMerger({"billing": 0, "control": 1}, idle_ms=IDLE_MS, buffered_max=10_000)
    merger.assign({A: 0, B: 0}, now_ms=0)
    return merger


def test_records_of_two_topics_come_out_in_timestamp_order() -> None:
    merger = _merger()
    merger.add(A, [Record("billing", 0, 0, None, b"", timestamp=10), Record("billing", 0, 1, None, b"", timestamp=30)])
    merger.add(B, [Record("control", 0, 0, None, b"", timestamp=20)])
    merger.set_highwater(A, 2)
    merger.set_highwater(B, 1)
    out = merger.take(10, now_ms=10_000)
    assert [(r.topic, r.offset) for r in out] == [("billing", 0), ("control", 0), ("billing", 1)]


def test_a_stream_the_broker_says_is_behind_holds_the_partition_until_the_next_fetch() -> None:
    merger = _merger()
    merger.add(B, _records(B, 0, 1, ts0=5_000))
    merger.set_highwater(A, 50)  # billing has 50 records not fetched yet
    merger.set_highwater(B, 1)
    assert merger.take(10, now_ms=10_000) == []
    # a stuck stream cannot stall the partition for ever
    assert len(merger.take(10, now_ms=10_000 + 10 * IDLE_MS)) == 1


def test_a_stream_last_seen_caught_up_before_a_record_was_made_is_not_trusted_to_be_caught_up() -> None:
    """The consumer does not fetch billing again while it holds fetched records of it: its high-water mark
    (100) dates from before billing 100..199 and control's b0 were produced. b0 must wait for them."""
    merger = _merger()
    fetched_at = 1_000_000
    merger.add(A, _records(A, 10, 100, ts0=fetched_at - 200))  # the rest of billing's first fetch
    merger.add(B, [Record("control", 0, 0, None, b"", timestamp=fetched_at + 500)])  # b0, made later
    merger.set_highwater(A, 100, observed_ms=fetched_at)  # stale: billing 100..199 exist by now
    merger.set_highwater(B, 1, observed_ms=fetched_at + 1_500)
    now = fetched_at + 1_600  # b0 is older than idle_ms
    out = merger.take(1000, now_ms=now)
    assert [r.topic for r in out] == ["billing"] * 90  # b0 is not handed out after billing's fetched records
    # the next fetch of billing brings 100..199, made before b0; then b0
    merger.add(A, _records(A, 100, 200, ts0=fetched_at - 200))
    merger.set_highwater(A, 200, observed_ms=now + 100)
    out = merger.take(1000, now_ms=now + 200)
    assert [(r.topic, r.offset) for r in out][-1] == ("control", 0)
    assert [r.offset for r in out[:-1]] == list(range(100, 200))


def test_a_fresh_fetch_of_an_empty_stream_lets_an_old_enough_record_through() -> None:
    merger = _merger()
    merger.add(B, [Record("control", 0, 0, None, b"", timestamp=5_000)])
    merger.set_highwater(A, 0, observed_ms=9_900)  # billing empty, and seen so just now
    merger.set_highwater(B, 1, observed_ms=9_900)
    assert [r.topic for r in merger.take(10, now_ms=5_500)] == []  # younger than idle_ms: in-flight may precede
    assert [r.topic for r in merger.take(10, now_ms=10_000)] == ["control"]


def test_a_stale_stream_holds_the_partition_until_a_fresh_fetch_of_it() -> None:
    merger = _merger()
    merger.add(B, [Record("control", 0, 0, None, b"", timestamp=5_000)])
    merger.set_highwater(A, 0, observed_ms=4_000)  # billing last fetched before control's record was made
    merger.set_highwater(B, 1, observed_ms=9_900)
    assert merger.take(10, now_ms=10_000) == []
    assert merger.take(10, now_ms=10_000 + 10 * IDLE_MS) == []  # not fetched again: a slow loop is no reason
    merger.set_highwater(A, 0, observed_ms=10_000 + 10 * IDLE_MS)  # fetched again: still nothing before it
    assert [r.topic for r in merger.take(10, now_ms=10_000 + 10 * IDLE_MS + 1)] == ["control"]


def test_a_high_water_mark_fetched_before_the_assignment_does_not_make_a_stream_caught_up() -> None:
    """A consumer keeps a partition's last mark across a seek: on a partition just taken over, billing looks
    caught up at the stored position by a fetch older than the assignment. The day close must wait for a fetch
    made after the assignment, which brings billing's earlier records."""
    merger = StreamMerger({"billing": 0, "control": 1}, idle_ms=IDLE_MS, buffered_max=10_000)
    assigned_at = 100_000
    merger.assign({A: 500, B: 0}, now_ms=assigned_at)
    merger.add(B, [Record("control", 0, 0, None, b"", timestamp=80_000)])  # a day close, made long ago
    merger.set_highwater(A, 500, observed_ms=assigned_at - 10_000)  # before the assignment: not evidence
    merger.set_highwater(B, 1, observed_ms=assigned_at + 400)
    assert merger.take(10, now_ms=assigned_at + 500) == []
    # the first fetch of billing made after the assignment brings the bills the day close must follow
    merger.add(A, _records(A, 500, 510, ts0=70_000))
    merger.set_highwater(A, 510, observed_ms=assigned_at + 600)
    out = merger.take(100, now_ms=assigned_at + 700)
    assert [(r.topic, r.offset) for r in out] == [("billing", o) for o in range(500, 510)] + [("control", 0)]


def test_a_stream_behind_that_the_consumer_has_not_fetched_again_holds_the_partition_however_slow_the_loop() -> None:
    """Billing's records are fetched but still queued in the consumer (it hands out one partition's records
    per poll): its mark is not refreshed until they are handed out. A slow loop is no reason to give up on
    them, so the day close is not folded ahead of them after ten idle periods of wall-clock time."""
    merger = _merger()
    fetched_at = 1_000_000
    merger.add(B, [Record("control", 0, 0, None, b"", timestamp=fetched_at - 60_000)])
    merger.set_highwater(A, 50, observed_ms=fetched_at)  # billing 0..49 are queued in the consumer
    merger.set_highwater(B, 1, observed_ms=fetched_at + 20_000)
    assert merger.take(10, now_ms=fetched_at + 100) == []
    assert merger.take(10, now_ms=fetched_at + 10 * IDLE_MS + 100) == []  # still not fetched again: wait
    merger.add(A, _records(A, 0, 50, ts0=fetched_at - 70_000))
    out = merger.take(100, now_ms=fetched_at + 12 * IDLE_MS)
    assert [(r.topic, r.offset) for r in out] == [("billing", o) for o in range(50)] + [("control", 0)]


def test_a_stream_fetched_again_and_again_without_its_records_is_given_up_after_ten_idle_periods() -> None:
    """A stuck stream: every fetch says billing has more, none brings it. The partition goes on."""
    merger = _merger()
    merger.add(B, [Record("control", 0, 0, None, b"", timestamp=1_000)])
    merger.set_highwater(B, 1, observed_ms=5_000)
    merger.set_highwater(A, 50, observed_ms=5_000)
    assert merger.take(10, now_ms=5_000) == []
    merger.set_highwater(A, 50, observed_ms=5_000 + 9 * IDLE_MS)
    assert merger.take(10, now_ms=5_000 + 9 * IDLE_MS) == []
    merger.set_highwater(A, 50, observed_ms=5_000 + 10 * IDLE_MS)
    assert [r.topic for r in merger.take(10, now_ms=5_000 + 10 * IDLE_MS)] == ["control"]


def test_a_stream_that_is_never_fetched_again_holds_the_partition_at_most_stall_ms_max() -> None:
    merger = StreamMerger({"billing": 0, "control": 1}, idle_ms=IDLE_MS, buffered_max=10_000, stall_ms_max=30_000)
    merger.assign({A: 0, B: 0}, now_ms=0)
    merger.add(B, [Record("control", 0, 0, None, b"", timestamp=1_000)])
    merger.set_highwater(B, 1, observed_ms=5_000)
    assert merger.take(10, now_ms=5_000) == []  # billing not fetched since the assignment
    assert merger.take(10, now_ms=5_000 + 29_999) == []
    assert [r.topic for r in merger.take(10, now_ms=5_000 + 30_000)] == ["control"]


def test_a_record_queued_behind_a_later_one_of_its_stream_still_comes_before_a_business_day() -> None:
    """Two producers write the payments partition: a loader's payment B (made at 100) landed behind the relay's
    line report R (made at 300), their deliveries having raced. The day close D (200) was made after B, so it
    must follow B; the stream's own order puts R first."""
    merger = StreamMerger({"payments": 0, "control": 1}, idle_ms=IDLE_MS, buffered_max=10_000)
    pay, ctl = ("payments", 0), ("control", 0)
    merger.assign({pay: 0, ctl: 0}, now_ms=0)
    merger.add(pay, [Record("payments", 0, 0, None, b"", timestamp=300),
                     Record("payments", 0, 1, None, b"", timestamp=100)])
    merger.add(ctl, [Record("control", 0, 0, None, b"", timestamp=200)])
    merger.set_highwater(pay, 2, observed_ms=9_000)
    merger.set_highwater(ctl, 1, observed_ms=9_000)
    out = merger.take(10, now_ms=10_000)
    assert [(r.topic, r.offset) for r in out] == [("payments", 0), ("payments", 1), ("control", 0)]


def test_a_business_day_waits_for_a_behind_stream_whose_newest_record_is_less_than_idle_ms_older() -> None:
    """Payments holds R (made at 5,300) and the broker has more of it: a record made up to idle_ms before R may
    still come (another producer's delivery racing), so the day close D (5,200) waits for the next fetch."""
    merger = StreamMerger({"payments": 0, "control": 1}, idle_ms=IDLE_MS, buffered_max=10_000)
    pay, ctl = ("payments", 0), ("control", 0)
    merger.assign({pay: 0, ctl: 0}, now_ms=0)
    merger.add(pay, [Record("payments", 0, 0, None, b"", timestamp=5_300)])
    merger.add(ctl, [Record("control", 0, 0, None, b"", timestamp=5_200)])
    merger.set_highwater(pay, 2, observed_ms=9_000)  # offset 1 is on the broker, not fetched yet
    merger.set_highwater(ctl, 1, observed_ms=9_000)
    assert merger.take(10, now_ms=10_000) == []  # neither D nor R: R is not the smallest record
    merger.add(pay, [Record("payments", 0, 1, None, b"", timestamp=5_100)])  # made before D
    merger.set_highwater(pay, 2, observed_ms=10_050)
    out = merger.take(10, now_ms=10_100)
    assert [(r.topic, r.offset) for r in out] == [("payments", 0), ("payments", 1), ("control", 0)]


def test_a_caught_up_stream_holding_records_is_trusted_only_as_of_its_fetch() -> None:
    """Payments holds only R (made after D) and was last seen caught up before D was idle_ms old: a payment
    made before D may still have been in flight then. D waits for a fresher fetch of payments."""
    merger = StreamMerger({"payments": 0, "control": 1}, idle_ms=IDLE_MS, buffered_max=10_000)
    pay, ctl = ("payments", 0), ("control", 0)
    merger.assign({pay: 0, ctl: 0}, now_ms=0)
    merger.add(pay, [Record("payments", 0, 0, None, b"", timestamp=5_300)])
    merger.add(ctl, [Record("control", 0, 0, None, b"", timestamp=5_200)])
    merger.set_highwater(pay, 1, observed_ms=5_250)
    merger.set_highwater(ctl, 1, observed_ms=9_000)
    assert merger.take(10, now_ms=10_000) == []
    merger.set_highwater(pay, 1, observed_ms=10_000)  # fetched again: nothing came before D
    assert [(r.topic, r.offset) for r in merger.take(10, now_ms=10_000)] == [("control", 0), ("payments", 0)]


def test_a_full_stream_does_not_hold_its_partition() -> None:
    """A stream is fetched again only once some of it is handed out: holding the partition for its next fetch
    would wait for ever."""
    merger = StreamMerger({"payments": 0, "control": 1}, idle_ms=IDLE_MS, buffered_max=2)
    pay, ctl = ("payments", 0), ("control", 0)
    merger.assign({pay: 0, ctl: 0}, now_ms=0)
    merger.add(pay, [Record("payments", 0, o, None, b"", timestamp=5_300 + o) for o in range(2)])
    merger.add(ctl, [Record("control", 0, 0, None, b"", timestamp=5_200)])
    merger.set_highwater(pay, 50, observed_ms=9_000)
    merger.set_highwater(ctl, 1, observed_ms=9_000)
    assert [(r.topic, r.offset) for r in merger.take(1, now_ms=10_000)] == [("control", 0)]


def _reference_merge(streams: dict[tuple[str, int], list[Record]], rank: dict[str, int]) -> list[Record]:
    """The order by definition, record by record: the first record of the stream whose remaining records
    include the smallest key (each stream's own order kept)."""
    left = {tp: list(rs) for tp, rs in streams.items()}
    out = []
    while any(left.values()):
        def smallest(tp: tuple[str, int]) -> tuple[int, int, int, int]:
            return min((r.timestamp, r.seq, rank.get(r.topic, 99), r.offset) for r in left[tp])
        tp = min((tp for tp in left if left[tp]), key=smallest)
        out.append(left[tp].pop(0))
    return out


def test_the_merge_of_fetched_streams_in_any_order_is_the_order_by_definition() -> None:
    """Random streams, sorted or not (two producers racing), with ties in timestamp and sequence, unknown
    topics, several partitions and batch sizes, all fetched and old enough: each partition's records come out
    exactly in the order the definition gives, however the takes cut them."""
    import random

    topics = ["billing", "payments", "control", "enrollment", "zz-unranked", "zz-other"]
    rank = {"billing": 0, "payments": 1, "control": 2, "enrollment": 3}
    unsorted = 0
    for seed in range(80):
        rng = random.Random(seed)
        merger = StreamMerger(rank, idle_ms=IDLE_MS, buffered_max=100_000)
        tps = [(t, p) for p in range(rng.randint(1, 3)) for t in rng.sample(topics, rng.randint(1, len(topics)))]
        merger.assign({tp: 0 for tp in tps}, now_ms=0)
        streams = {}
        for tp in tps:
            n = rng.randint(0, 40)
            stamps = [rng.randint(0, 30) for _ in range(n)]
            if rng.random() < 0.5:
                stamps.sort()
            unsorted += stamps != sorted(stamps)
            streams[tp] = [Record(tp[0], tp[1], o, None, b"{}", timestamp=ts, seq=rng.randint(0, 2))
                           for o, ts in enumerate(stamps)]
            merger.add(tp, streams[tp])
            merger.set_highwater(tp, n, observed_ms=99_000)
        taken: list[Record] = []
        for _ in range(200):
            batch = merger.take(rng.randint(1, 50), now_ms=100_000)
            if not batch:
                break
            taken.extend(batch)
        for p in {tp[1] for tp in tps}:
            expected = _reference_merge({tp: rs for tp, rs in streams.items() if tp[1] == p}, rank)
            assert [r for r in taken if r.partition == p] == expected, f"seed {seed} partition {p}"
        assert all(merger.buffered(tp) == 0 for tp in tps)
    assert unsorted > 20, "no stream out of order: the test would prove little"
