"""Random and mutated records thrown at the batch processor: it never crashes, and the counts add up.

Records are what other producers could put straight onto the input topics: valid events, the same
events with fields mutated (wrong types, negative amounts, missing or unknown fields, other tags),
truncated or random bytes, wrong keys, and exact resends.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events import codec
from processor.batch import Record, partition_for
from tests.unit.builders import ACCOUNT, LOG, PARTITIONS, TOPIC_OF, TOPICS, adjust, bill, day, enroll, make, pay, rate

VALID = [
    rate(78_412, event_id="f-rate"),
    enroll(event_id="f-enr"),
    bill(78_412, event_id="f-bill"),
    pay(70_000, event_id="f-pay", trace="T1"),
    pay(8_412, event_id="f-pay2", trace="T2"),
    adjust(-1_000, event_id="f-adj"),
    day(__import__("datetime").date(2026, 3, 1), event_id="f-day"),
]

MUTATIONS: list[Any] = [None, -1, 0, 2**63, "x", "", [], {}, True, 1.5, "2026-13-45", "*"]


def mutated(raw: bytes, field: str, value: Any, drop: bool) -> bytes:
    data = json.loads(raw)
    if drop:
        data.pop(field, None)
    else:
        data[field] = value
    return json.dumps(data).encode()


@st.composite
def records(draw: st.DrawFn) -> list[tuple[str, bytes | None, bytes | None]]:
    """(topic, key, value) triples in publish order."""
    out: list[tuple[str, bytes | None, bytes | None]] = []
    for _ in range(draw(st.integers(1, 25))):
        event = draw(st.sampled_from(VALID))
        raw = codec.encode(event)
        topic = TOPIC_OF[codec.decode_any(raw).__struct_config__.tag]  # type: ignore[index]
        key: bytes | None = event.account_id.encode()
        kind = draw(st.sampled_from(["valid", "valid", "mutate", "bytes", "truncate", "key", "topic", "tag"]))
        if kind == "mutate":
            fields = list(json.loads(raw))
            raw = mutated(raw, draw(st.sampled_from(fields)), draw(st.sampled_from(MUTATIONS)), draw(st.booleans()))
        elif kind == "bytes":
            raw = draw(st.binary(max_size=200))
        elif kind == "truncate":
            raw = raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
        elif kind == "key":
            key = draw(st.sampled_from([None, b"", b"someone-else", ACCOUNT.encode() + b"x"]))
        elif kind == "topic":
            topic = draw(st.sampled_from(sorted(set(TOPIC_OF.values()) - {topic})))
        elif kind == "tag":
            raw = mutated(raw, "type", draw(st.sampled_from(["premium_billed", "payment_received", "nope", ""])), False)
        out.append((topic, key, raw))
    return out


def to_records(triples: list[tuple[str, bytes | None, bytes | None]]) -> list[Record]:
    offsets: dict[tuple[str, int], int] = {}
    out = []
    for topic, key, value in triples:
        # broadcast copies and keyless records go to partition 0; keyed ones where Kafka would put them
        partition = partition_for(key, PARTITIONS) if key and key != b"*" else 0
        offset = offsets.get((topic, partition), 0)
        offsets[(topic, partition)] = offset + 1
        out.append(Record(topic, partition, offset, key, value))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records(), st.integers(1, 10))
def test_random_and_mutated_records_never_crash_and_the_counts_add_up(
    triples: list[tuple[str, bytes | None, bytes | None]], batch_size: int,
) -> None:
    processor, store = make()
    recs = to_records(triples)
    for i in range(0, len(recs), batch_size):
        result = processor.process(recs[i:i + batch_size])
        store.commit_batch(result.write)
        processor.committed(result)
    counts = store.counts()
    assert counts.received == len(recs)
    assert counts.received == counts.applied + counts.duplicates + counts.dead_lettered
    assert store.archive_count() == counts.applied
    assert len(store.dead_letters()) == counts.dead_lettered
    for dead in store.dead_letters():
        assert dead.reason  # every rejection says why
    # the positions moved past every record, whatever became of it
    positions = store.positions(LOG)
    for (topic, partition), n in {(r.topic, r.partition): r.offset + 1 for r in recs}.items():
        assert positions[(topic, partition)] >= n


def test_the_topics_the_fuzzer_uses_are_the_ledgers_input_topics() -> None:
    assert set(TOPIC_OF.values()) <= set(TOPICS.inputs())
