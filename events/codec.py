"""One codec for every event: JSON on the wire, canonical bytes in the archive, upcasters for old versions."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import msgspec

from events.types import (
    INPUT_TYPES,
    OUTPUT_TYPES,
    AnyEvent,
    Event,
    InputEvent,
    OutputEvent,
    tag_of,
)

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

CURRENT_VERSION: dict[str, int] = {tag_of(t): t.SCHEMA_VERSION for t in (*INPUT_TYPES, *OUTPUT_TYPES)}
EVENT_CLASSES: dict[str, type[Event]] = {tag_of(t): t for t in (*INPUT_TYPES, *OUTPUT_TYPES)}

# (tag, from_version) -> function turning a version-N dict into a version-N+1 dict.
# Register with @upcaster("tag", N); each must be tested on stored bytes of version N.
UPCASTERS: dict[tuple[str, int], Upcaster] = {}

_encoder = msgspec.json.Encoder()
_input_decoder = msgspec.json.Decoder(InputEvent)
_output_decoder = msgspec.json.Decoder(OutputEvent)
_any_decoder = msgspec.json.Decoder(AnyEvent)
_dict_decoder = msgspec.json.Decoder(dict[str, Any])


class EventDecodeError(ValueError):
    """A record that cannot become an event; ``reason`` says which field and why."""

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


def upcaster(tag: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    def register(fn: Upcaster) -> Upcaster:
        key = (tag, from_version)
        assert key not in UPCASTERS, f"two upcasters for {key}"
        UPCASTERS[key] = fn
        return fn

    return register


def encode(event: Event) -> bytes:
    """Canonical JSON bytes: field order is the struct's, so equal events give equal bytes."""
    return _encoder.encode(event)


def body_hash(canonical: bytes) -> bytes:
    return hashlib.sha256(canonical).digest()


def _field_of(message: str) -> str | None:
    missing = "missing required field `"
    at = message.find(missing)
    if at >= 0:
        return message[at + len(missing) :].split("`", 1)[0] or None
    marker = "at `$."
    at = message.find(marker)
    if at < 0:
        return None
    return message[at + len(marker) :].rstrip("`").split("[")[0] or None


def _upcast(raw: bytes, decoder: msgspec.json.Decoder[Any], first_error: msgspec.ValidationError) -> Any:
    try:
        data = _dict_decoder.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # e.g. invalid UTF-8 inside a key
        raise EventDecodeError(f"not JSON: {exc}") from exc
    tag = data.get("type")
    version = data.get("schema_version", 1)
    if not isinstance(tag, str) or tag not in CURRENT_VERSION or not isinstance(version, int):
        raise EventDecodeError(str(first_error), field=_field_of(str(first_error))) from first_error
    current = CURRENT_VERSION[tag]
    if version > current:
        raise EventDecodeError(
            f"schema_version {version} of {tag} is newer than this ledger knows ({current})",
            field="schema_version",
        )
    if version == current:
        raise EventDecodeError(str(first_error), field=_field_of(str(first_error))) from first_error
    while version < current:
        step = UPCASTERS.get((tag, version))
        if step is None:
            raise EventDecodeError(f"no upcaster for {tag} v{version}", field="schema_version")
        try:
            data = step(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise EventDecodeError(
                f"cannot upcast {tag} v{version}: {type(exc).__name__}: {exc}", field="schema_version"
            ) from exc
        version += 1
        data["schema_version"] = version
    try:
        return msgspec.convert(data, type=decoder.type)
    except msgspec.ValidationError as exc:
        raise EventDecodeError(str(exc), field=_field_of(str(exc))) from exc


def _decode(raw: bytes, decoder: msgspec.json.Decoder[Any]) -> Any:
    try:
        event = decoder.decode(raw)
    except msgspec.ValidationError as exc:
        return _upcast(raw, decoder, exc)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise EventDecodeError(f"not JSON: {exc}") from exc
    if event.schema_version != type(event).SCHEMA_VERSION:
        # The old shape happened to validate against the new one; upcast it all the same.
        return _upcast(raw, decoder, msgspec.ValidationError("old schema_version"))
    return event


def decode_input(raw: bytes) -> InputEvent:
    """Decode and validate an input-topic record, upcasting older versions."""
    event: InputEvent = _decode(raw, _input_decoder)
    _check_invariants(event)
    return event


def decode_output(raw: bytes) -> OutputEvent:
    event: OutputEvent = _decode(raw, _output_decoder)
    return event


def decode_any(raw: bytes) -> AnyEvent:
    event: AnyEvent = _decode(raw, _any_decoder)
    return event


def to_builtins(event: Event) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(event)
    return out


def _check_invariants(event: InputEvent) -> None:
    """Rules the type system cannot say; each names its field."""
    from events.types import (
        BROADCAST_ACCOUNT,
        BillingCycleClosed,
        DiscrepancyAction,
        EnrollmentChanged,
        FsaClaimSubmitted,
        FsaContributionReceived,
        FsaElectionMade,
        PaymentReceived,
        PremiumBilled,
        RatePublished,
    )

    if not event.event_id:
        raise EventDecodeError("event_id is empty", field="event_id")
    if not event.account_id:
        raise EventDecodeError("account_id is empty", field="account_id")
    if type(event).BROADCAST != (event.account_id == BROADCAST_ACCOUNT):
        raise EventDecodeError(
            f"account_id must be {BROADCAST_ACCOUNT!r} exactly for broadcast events", field="account_id"
        )
    if isinstance(event, RatePublished):
        if event.employee_cents + event.employer_cents != event.total_cents:
            raise EventDecodeError("employee_cents + employer_cents != total_cents", field="total_cents")
        if min(event.total_cents, event.employee_cents, event.employer_cents) < 0:
            raise EventDecodeError("rate amounts must not be negative", field="total_cents")
        if event.month_from.day != 1:
            raise EventDecodeError("month_from must be the first of a month", field="month_from")
        if event.month_through is not None and event.month_through < event.month_from:
            raise EventDecodeError("month_through is before month_from", field="month_through")
    elif isinstance(event, PremiumBilled):
        if event.coverage_month.day != 1:
            raise EventDecodeError("coverage_month must be the first of a month", field="coverage_month")
        if event.amount_cents < 0:
            raise EventDecodeError("a bill amount must not be negative; post an adjustment", field="amount_cents")
    elif isinstance(event, PaymentReceived):
        # Negative: a take-back (the payer recovers money paid earlier for the month, 820 RMR04 < 0).
        if event.amount_cents == 0:
            raise EventDecodeError("a payment of zero moves no money", field="amount_cents")
        if event.coverage_month is not None and event.coverage_month.day != 1:
            raise EventDecodeError("coverage_month must be the first of a month", field="coverage_month")
    elif isinstance(event, BillingCycleClosed):
        if event.cycle_month.day != 1:
            raise EventDecodeError("cycle_month must be the first of a month", field="cycle_month")
    elif isinstance(event, EnrollmentChanged):
        if event.benefit_end is not None and event.benefit_end < event.benefit_begin:
            raise EventDecodeError("benefit_end is before benefit_begin", field="benefit_end")
    elif isinstance(event, FsaElectionMade):
        if event.election_cents < 0:
            raise EventDecodeError("an election must not be negative (0 revokes it)", field="election_cents")
        _check_plan_year(event.plan_year)
    elif isinstance(event, FsaContributionReceived):
        if event.amount_cents <= 0:
            raise EventDecodeError("a contribution must be positive", field="amount_cents")
        _check_plan_year(event.plan_year)
    elif isinstance(event, FsaClaimSubmitted):
        if event.amount_cents <= 0:
            raise EventDecodeError("a claim amount must be positive", field="amount_cents")
        if event.plan_year is not None:
            _check_plan_year(event.plan_year)
    elif isinstance(event, DiscrepancyAction):
        _check_action(event)


# Plan years are calendar-year numbers; anything else is a typo upstream, not a plan year.
PLAN_YEAR_MIN = 1900
PLAN_YEAR_MAX = 9998


def _check_plan_year(year: int) -> None:
    if not PLAN_YEAR_MIN <= year <= PLAN_YEAR_MAX:
        raise EventDecodeError(f"plan_year {year} is not a year between {PLAN_YEAR_MIN} and {PLAN_YEAR_MAX}",
                               field="plan_year")


def _check_action(event: Any) -> None:
    """A person's action on a discrepancy: who and why are present and bounded; closing needs a reason."""
    from events.types import (
        NOTE_CHARS_MAX,
        REASON_CHARS_MAX,
        USER_CHARS_MAX,
        DiscrepancyAssigned,
        DiscrepancyDismissed,
        DiscrepancyNoted,
        DiscrepancyReopened,
        DiscrepancyWaived,
        DiscrepancyWrittenOff,
        RetroChangeRejected,
        WaiverRejected,
    )

    if not event.discrepancy_id.strip():
        raise EventDecodeError("discrepancy_id is empty", field="discrepancy_id")
    for name in ("user", "agency_id"):
        value = getattr(event, name)
        if value is not None and not (0 < len(value.strip()) <= USER_CHARS_MAX):
            raise EventDecodeError(f"{name} must be 1 to {USER_CHARS_MAX} characters", field=name)
    if len(event.reason) > REASON_CHARS_MAX:
        raise EventDecodeError(f"reason is longer than {REASON_CHARS_MAX} characters", field="reason")
    needs_reason = (DiscrepancyWaived, DiscrepancyWrittenOff, WaiverRejected, RetroChangeRejected,
                    DiscrepancyDismissed, DiscrepancyReopened)
    if isinstance(event, needs_reason) and not event.reason.strip():
        raise EventDecodeError("a reason is required", field="reason")
    if isinstance(event, DiscrepancyNoted) and not (0 < len(event.note.strip()) <= NOTE_CHARS_MAX):
        raise EventDecodeError(f"a note must be 1 to {NOTE_CHARS_MAX} characters", field="note")
    if isinstance(event, DiscrepancyAssigned) and event.assignee is not None and not (
            0 < len(event.assignee.strip()) <= USER_CHARS_MAX):
        raise EventDecodeError(f"assignee must be 1 to {USER_CHARS_MAX} characters", field="assignee")
