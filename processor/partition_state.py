"""A partition's reference data, folded by every partition in its own order: the rate table (with its
binary search by month) and the business date. processor.state re-exports both classes."""

from __future__ import annotations

import bisect
from datetime import date, timedelta

import msgspec

from events.types import Cents


class RateEntry(msgspec.Struct, kw_only=True, gc=False):
    rate_id: str
    month_from: date
    month_through: date | None
    total_cents: Cents
    employee_cents: Cents
    employer_cents: Cents
    event_id: str


_FOREVER = date.max
_UNKNOWN = object()
# answers rate_for remembers per partition: plans x tiers x months asked, a few thousand in practice;
# about 200 bytes each, so at most about 1.6 MB a partition
RATE_MEMO_ENTRIES_MAX = 8_192


def _timeline(entries: list[RateEntry]) -> tuple[list[date], list[tuple[date, RateEntry]]]:
    """The publications of one plan and tier laid out as non-overlapping spans, later ones over
    earlier ones: (span starts, [(span end, entry)]), for a binary search by month."""
    spans: list[tuple[date, date, RateEntry]] = []
    for entry in entries:
        start, end = entry.month_from, entry.month_through or _FOREVER
        kept: list[tuple[date, date, RateEntry]] = []
        for s, e, old in spans:
            if e < start or s > end:
                kept.append((s, e, old))
                continue
            if s < start:
                kept.append((s, start - timedelta(days=1), old))
            if e > end:
                kept.append((end + timedelta(days=1), e, old))
        kept.append((start, end, entry))
        spans = sorted(kept, key=lambda x: x[0])
    return [s for s, _, _ in spans], [(e, entry) for _, e, entry in spans]


class PartitionState(msgspec.Struct, kw_only=True, dict=True):
    """Reference data every partition folds in its own order: rates and the business date."""

    partition: int
    rates: dict[str, list[RateEntry]] = msgspec.field(default_factory=dict)  # "plan|tier" -> in publish order
    business_date: date | None = None
    business_date_event_id: str | None = None
    billing_closed_through: date | None = None  # the latest coverage month whose billing cycle closed
    billing_closed_from: date | None = None  # the first cycle this partition saw close
    # payer accounts with a remittance to judge once a business day passes its payment date, by the
    # earliest such date: a day_closed finds them here, cached or not
    remittances_due: dict[str, date] = msgspec.field(default_factory=dict)
    billing_closed_event_id: str | None = None

    def rate_for(self, plan: str, tier: str, month: date) -> RateEntry | None:
        """The latest-published rate covering the month: a later publication overrides an earlier one.

        A binary search over the plan and tier's publications laid out as spans, built once per
        publication (``rates_changed``) and kept beside the state, never encoded with it. The answers are
        remembered by (plan, tier, month): the fold asks for the same few several times an event."""
        memo: dict[tuple[str, str, date], RateEntry | None] | None = self.__dict__.get("_rate_memo")
        if memo is None:
            memo = self.__dict__["_rate_memo"] = {}
        asked = (plan, tier, month)
        found = memo.get(asked, _UNKNOWN)
        if found is not _UNKNOWN:
            return found  # type: ignore[return-value]
        entry = self._look_up(plan, tier, month)
        if len(memo) >= RATE_MEMO_ENTRIES_MAX:
            memo.clear()
        memo[asked] = entry
        return entry

    def _look_up(self, plan: str, tier: str, month: date) -> RateEntry | None:
        key = f"{plan}|{tier}"
        cache: dict[str, tuple[list[date], list[tuple[date, RateEntry]]]] = self.__dict__.setdefault("_spans", {})
        found = cache.get(key)
        if found is None:
            found = cache[key] = _timeline(self.rates.get(key, []))
        starts, spans = found
        i = bisect.bisect_right(starts, month) - 1
        if i < 0:
            return None
        end, entry = spans[i]
        return entry if month <= end else None

    def rates_changed(self, plan: str, tier: str) -> None:
        """A publication was added for the plan and tier: its spans are laid out again on next use."""
        self.__dict__.get("_spans", {}).pop(f"{plan}|{tier}", None)
        self.__dict__.pop("_rate_memo", None)  # rare: every answer is looked up again
