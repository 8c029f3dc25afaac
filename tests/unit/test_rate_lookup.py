"""Rate lookup by binary search over spans agrees with the rule it replaces: the latest publication
covering the month wins."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor import partition_state
from processor.rules.pricing import add_rate
from processor.state import PartitionState, RateEntry, decode_partition, encode_state
from tests.unit.builders import rate

MONTHS = [date(2025 + i // 12, i % 12 + 1, 1) for i in range(36)]


def naive(entries: list[RateEntry], month: date) -> RateEntry | None:
    for entry in reversed(entries):
        if entry.month_from <= month and (entry.month_through is None or month <= entry.month_through):
            return entry
    return None


publication = st.tuples(st.integers(0, 35), st.one_of(st.none(), st.integers(0, 35)), st.integers(1, 10**6))


Publications = list[tuple[int, int | None, int]]


@settings(max_examples=200, deadline=None)
@given(st.lists(publication, max_size=12))
def test_the_latest_publication_covering_a_month_wins_whatever_the_order(pubs: Publications) -> None:
    part = PartitionState(partition=0)
    for i, (start, through, total) in enumerate(pubs):
        first = MONTHS[start]
        last = None if through is None else MONTHS[max(start, through)]
        add_rate(part, rate(total, month_from=first, month_through=last, event_id=f"r{i}", rate_id=f"r{i}"))
        for month in MONTHS:  # lookups between publications use the spans as they stand then
            assert part.rate_for("UMP-CLASSIC", "EMP", month) == naive(part.rates["UMP-CLASSIC|EMP"], month)
    again = decode_partition(encode_state(part))  # a reloaded state lays its spans out afresh
    for month in MONTHS:
        assert again.rate_for("UMP-CLASSIC", "EMP", month) == part.rate_for("UMP-CLASSIC", "EMP", month)
    assert part.rate_for("UMP-CLASSIC", "ESP", MONTHS[0]) is None


def test_remembered_rates_stay_within_their_bound_and_agree_with_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(partition_state, "RATE_MEMO_ENTRIES_MAX", 5)
    part = PartitionState(partition=0)
    add_rate(part, rate(100, month_from=MONTHS[0], month_through=MONTHS[20], event_id="r0", rate_id="r0"))
    add_rate(part, rate(200, month_from=MONTHS[10], event_id="r1", rate_id="r1"))
    for _ in range(3):
        for month in MONTHS:
            assert part.rate_for("UMP-CLASSIC", "EMP", month) == naive(part.rates["UMP-CLASSIC|EMP"], month)
            assert len(part.__dict__["_rate_memo"]) <= 5
