"""The tier of an enrollment whose sender did not say it (834 HD05 absent and not derivable).

A stop-gap until the coverage rules carry a discrepancy kind for it: the fold snapshots a coverage
segment's tier as a string, so an ``EnrollmentChanged`` with ``tier=None`` takes the tier of the
member's segment in force for that coverage line, else the latest one, else ``UNKNOWN_TIER``. No rate
is published for ``UNKNOWN_TIER``, so such a coverage is never priced by accident.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from processor.state import CoverageSegment

UNKNOWN_TIER = "unknown"


def tier_in_force(existing: Sequence[CoverageSegment], on: date) -> str:
    """The tier of the segment in force on ``on``, else of the latest segment, else ``UNKNOWN_TIER``."""
    current = [s for s in existing if s.begin <= on and (s.end is None or s.end >= on)]
    chosen = max(current or existing, key=lambda s: s.begin, default=None)
    return chosen.tier if chosen is not None else UNKNOWN_TIER
