"""One codec for every event: JSON on the wire, canonical bytes in the archive, upcasters for old versions."""

from __future__ import annotations

import hashlib
import operator
import re
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

import msgspec

from events.money import AMOUNT_CENTS_MAX
from events.types import (
    BROADCAST_ACCOUNT,
    INPUT_TYPES,
    NOTE_CHARS_MAX,
    OUTPUT_TYPES,
    REASON_CHARS_MAX,
    USER_CHARS_MAX,
    AnyEvent,
    BillingCycleClosed,
    CashApplied,
    DiscrepancyAction,
    DiscrepancyAssigned,
    DiscrepancyDismissed,
    DiscrepancyNoted,
    DiscrepancyReopened,
    DiscrepancyWaived,
    DiscrepancyWrittenOff,
    EnrollmentChanged,
    Event,
    FsaClaimSubmitted,
    FsaContributionReceived,
    FsaElectionMade,
    InputEvent,
    OutputEvent,
    PaymentReceived,
    PremiumBilled,
    RatePublished,
    RemittanceLinePosted,
    RemittanceReceived,
    RetroChangeRejected,
    WaiverRejected,
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


# -- Bounds ------------------------------------------------------------------------------------------
# Every input field is bounded at the boundary, so no value that passes can overflow a bigint column,
# a date computation (a month after 9999-12) or a btree index row further on, or put a NUL into a text
# column. The README's "Bounds" table lists these; tests/unit/test_bounds.py tries each at and past it.

RECORD_BYTES_MAX = 1024 * 1024  # default of the setting record_bytes_max (a wire record, JSON bytes)
NESTING_MAX = 32  # JSON arrays and objects inside each other; events need 3 (event, adjustments, adjustment)
ID_CHARS_MAX = 256  # ids, codes and names: event_id, account_id, plan, payer_id, source, ...
TEXT_CHARS_MAX = 2000  # free text: reason, description
TEXT_FIELDS = frozenset({"reason", "description", "explanation", "action", "note"})
DATE_MIN = date(1900, 1, 1)  # every date and timestamp lies in [DATE_MIN, DATE_MAX]
DATE_MAX = date(2199, 12, 31)
# C0 and C1 control characters and DEL: a NUL cannot be stored in a PostgreSQL text column, and none of
# them belongs in an id or a sentence. Lone surrogates never get this far (msgspec refuses them).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
DERIVED_PAYMENT_SUFFIX = ":payment"  # a cash_applied's payment is posted as "<event_id>:payment"
# What the ledger itself posts after a remittance's line or payment: "<event_id>:posted" (a line's report
# to its payer), "<event_id>:funds:<16 hex>" (an advice funded); the triggering ids must leave room for it.
DERIVED_REMITTANCE_SUFFIX_CHARS = len(":posted") + len(":funds:") + 16


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


def decode_input(raw: bytes, *, bytes_max: int = RECORD_BYTES_MAX) -> InputEvent:
    """Decode and validate an input-topic record, upcasting older versions.

    Every field is bounded here, at the boundary (see "Bounds" below): a record that passes cannot
    overflow a column, a date computation or an index row further on.
    """
    if len(raw) > bytes_max:
        raise EventDecodeError(f"record of {len(raw):,} bytes is larger than {bytes_max:,} bytes (record_bytes_max)")
    if _nested_deeper_than(raw, NESTING_MAX):
        raise EventDecodeError(f"JSON nested deeper than {NESTING_MAX} levels")
    try:
        event: InputEvent = _decode(raw, _input_decoder)
    except RecursionError as exc:  # pragma: no cover - _nested_deeper_than refuses these first
        raise EventDecodeError(f"JSON nested deeper than {NESTING_MAX} levels") from exc
    check_bounds(event)
    if isinstance(event, CashApplied) and len(event.event_id) > ID_CHARS_MAX - len(DERIVED_PAYMENT_SUFFIX):
        # the payment the ledger posts for it is "<event_id>:payment", which must fit the bound too
        raise EventDecodeError(f"{len(event.event_id):,} characters, more than"
                               f" {ID_CHARS_MAX - len(DERIVED_PAYMENT_SUFFIX)} for a cash_applied", field="event_id")
    if isinstance(event, PaymentReceived | RemittanceReceived | RemittanceLinePosted) and (
            len(event.event_id) > ID_CHARS_MAX - DERIVED_REMITTANCE_SUFFIX_CHARS):
        raise EventDecodeError(f"{len(event.event_id):,} characters, more than"
                               f" {ID_CHARS_MAX - DERIVED_REMITTANCE_SUFFIX_CHARS} for a payment or remittance"
                               " (the ledger posts its reports under a longer id)", field="event_id")
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


_STR, _INT, _DATE, _DATETIME, _STRS, _STRUCTS = range(6)
_Plan = tuple[tuple[str, int, int, Any], ...]  # (field, kind, length limit, plan of nested structs)
_PLANS: dict[type, _Plan] = {}


def _kind(info: Any) -> tuple[int, Any] | None:
    """What to check of a field of this msgspec type (None: nothing, e.g. a Literal or a bool)."""
    from msgspec import inspect as mi

    if isinstance(info, mi.UnionType):
        kinds = [k for k in (_kind(t) for t in info.types if not isinstance(t, mi.NoneType)) if k is not None]
        assert len(kinds) <= 1, f"union of several checked types: {info}"
        return kinds[0] if kinds else None
    if isinstance(info, mi.StrType):
        return _STR, None
    if isinstance(info, mi.IntType):
        return _INT, None
    if isinstance(info, mi.DateType):
        return _DATE, None
    if isinstance(info, mi.DateTimeType):
        return _DATETIME, None
    if isinstance(info, mi.VarTupleType | mi.ListType | mi.FrozenSetType | mi.SetType):
        item = _kind(info.item_type)
        if item is None:
            return None
        if item[0] == _STR:
            return _STRS, None
        if item[0] == _STRUCTS:
            return _STRUCTS, item[1]
        raise AssertionError(f"collection of {info.item_type} is not bounded")
    if isinstance(info, mi.StructType):
        return _STRUCTS, _plan(info.cls)
    return None


def _plan(cls: type) -> _Plan:
    plan = _PLANS.get(cls)
    if plan is None:
        from msgspec import inspect as mi

        fields = []
        info = mi.type_info(cls)
        assert isinstance(info, mi.StructType), cls
        for f in info.fields:
            kind = _kind(f.type)
            if kind is not None:
                limit = TEXT_CHARS_MAX if f.name in TEXT_FIELDS else ID_CHARS_MAX
                fields.append((f.name, kind[0], limit, kind[1]))
        plan = _PLANS[cls] = tuple(fields)
    return plan


def _bad_text(value: str, limit: int) -> str | None:
    if len(value) > limit:
        return f"{len(value):,} characters, more than {limit:,}"
    bad = _CONTROL.search(value)
    if bad is not None:
        return f"control character U+{ord(bad.group()):04X} at position {bad.start()}"
    return None


def check_bounds(obj: Any) -> None:
    """Raise EventDecodeError naming the first field of ``obj`` (an event) out of bounds.

    The hot path makes one C-level pass over each kind of field, erring on the strict side (any string
    longer than an id may be); only a record that fails it (or one with nested values, such as
    remittance adjustments) is walked field by field, which applies the exact limits and names the culprit."""
    fast = _FAST.get(type(obj))
    if fast is None:
        fast = _FAST[type(obj)] = _fast_plan(type(obj))
    strs, ints, dates, stamps, nested = fast
    if nested is not None and any(nested(obj)):
        _walk_bounds(obj, "")
        return
    if strs is not None:
        texts = [*filter(None, strs(obj))]
        if texts:
            joined = "".join(texts)
            # isprintable() is stricter than _CONTROL (it also refuses, say, a no-break space), and C-fast;
            # no text is longer than an id if all of them together are not
            if (len(joined) > ID_CHARS_MAX and max(map(len, texts)) > ID_CHARS_MAX) or (
                    not joined.isprintable() and _CONTROL.search(joined) is not None):
                _walk_bounds(obj, "")
                return
    if ints is not None:
        amounts = [*filter(None, ints(obj))]
        if amounts and (max(amounts) >= AMOUNT_CENTS_MAX or min(amounts) <= -AMOUNT_CENTS_MAX):
            _walk_bounds(obj, "")
            return
    # DATE_MIN is a first of January and DATE_MAX a 31 December: comparing years is the same test, cheaper
    if dates is not None:
        for d in dates(obj):
            if d is not None and not _YEAR_MIN <= d.year <= _YEAR_MAX:
                _walk_bounds(obj, "")
                return
    if stamps is not None:
        for t in stamps(obj):
            if t is not None and not _YEAR_MIN <= t.year <= _YEAR_MAX:
                _walk_bounds(obj, "")
                return


_YEAR_MIN, _YEAR_MAX = DATE_MIN.year, DATE_MAX.year
assert (DATE_MIN.month, DATE_MIN.day, DATE_MAX.month, DATE_MAX.day) == (1, 1, 12, 31)


_Getter = Callable[[Any], tuple[Any, ...]]
_FAST: dict[type, tuple[_Getter | None, _Getter | None, _Getter | None, _Getter | None, _Getter | None]] = {}


def _getter(names: list[str]) -> _Getter | None:
    """All the named attributes as one tuple, fetched at C speed (None: there are none)."""
    if not names:
        return None
    if len(names) == 1:
        one = operator.attrgetter(names[0])
        return lambda obj: (one(obj),)
    return operator.attrgetter(*names)


def _fast_plan(cls: type) -> tuple[_Getter | None, _Getter | None, _Getter | None, _Getter | None, _Getter | None]:
    """The getters of the hot path: strings, integers, dates, timestamps and nested values."""
    plan = _plan(cls)
    return (
        _getter([n for n, k, _, _ in plan if k == _STR]),
        _getter([n for n, k, _, _ in plan if k == _INT]),
        _getter([n for n, k, _, _ in plan if k == _DATE]),
        _getter([n for n, k, _, _ in plan if k == _DATETIME]),
        _getter([n for n, k, _, _ in plan if k in (_STRS, _STRUCTS)]),
    )


def _walk_bounds(obj: Any, prefix: str) -> None:
    """The slow path: field by field, raising for the first out of bounds."""
    for name, kind, limit, _nested in _plan(type(obj)):
        value = getattr(obj, name)
        if value is None:
            continue
        where = prefix + name
        if kind == _STR:
            problem = _bad_text(value, limit)
            if problem is not None:
                raise EventDecodeError(problem, field=where)
        elif kind == _INT:
            if not -AMOUNT_CENTS_MAX < value < AMOUNT_CENTS_MAX:
                raise EventDecodeError(f"{value} is out of range: its magnitude must be below"
                                       f" {AMOUNT_CENTS_MAX:,} (events.money.AMOUNT_CENTS_MAX)", field=where)
        elif kind == _DATE or kind == _DATETIME:
            day = value.date() if isinstance(value, datetime) else value
            if not DATE_MIN <= day <= DATE_MAX:
                raise EventDecodeError(f"{value.isoformat()} is outside {DATE_MIN} .. {DATE_MAX}", field=where)
        elif kind == _STRS:
            for i, item in enumerate(value):
                problem = _bad_text(item, limit)
                if problem is not None:
                    raise EventDecodeError(f"item {i}: {problem}", field=where)
        elif isinstance(value, tuple | list):
            for i, item in enumerate(value):
                _walk_bounds(item, f"{where}[{i}].")
        else:
            _walk_bounds(value, f"{where}.")


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _nested_deeper_than(raw: bytes, limit: int) -> bool:
    """Whether the JSON text nests arrays and objects more than ``limit`` deep (brackets inside strings
    do not count). Decoders recurse per level: a few thousand levels crash them, so refuse early."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False  # the common case, at C speed
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in brackets:
        if byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return True
        else:
            depth -= 1
    return False
