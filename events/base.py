"""What every event is: a frozen, tagged, versioned msgspec Struct. Money is integer cents.

The event types are declared by domain next to this module (enrollment, billing, payments, operations,
discrepancies, fsa, workflow); events/types.py gathers them into the unions and the registry.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import ClassVar

import msgspec

Cents = int

# Broadcast events (rates, business days) carry this account id: they belong to no account and
# are published once to every partition so each partition folds them in order with its accounts.
BROADCAST_ACCOUNT = "*"


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Fields every event carries. ``event_id`` is the idempotency key."""

    SCHEMA_VERSION: ClassVar[int] = 1
    BROADCAST: ClassVar[bool] = False

    event_id: str
    account_id: str
    effective_on: date
    occurred_at: datetime
    source: str = "unknown"
    causation_id: str | None = None
    schema_version: int = 1
