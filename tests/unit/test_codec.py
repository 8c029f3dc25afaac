"""The codec: round trips, canonical bytes, decode errors that name their field, upcasting."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest

from events import codec
from events.codec import EventDecodeError, body_hash, decode_any, decode_input, decode_output, encode
from events.types import (
    INPUT_TYPES,
    OUTPUT_TYPES,
    BillingCycleClosed,
    CashApplied,
    DiscrepancyAmountChanged,
    DiscrepancyClosed,
    DiscrepancyOpened,
    DiscrepancyResolved,
    DiscrepancySuperseded,
    Event,
    FsaClaimAdjudicated,
    NoticeIssued,
    PaymentReceived,
    RefundIssued,
    RefundReturned,
    RemittanceFunded,
    RemittanceLinePosted,
    RemittanceReceived,
)
from tests.unit.builders import (
    FEB,
    JAN,
    T0,
    adjust,
    bill,
    claim,
    contribute,
    day,
    elect,
    enroll,
    pay,
    rate,
    reverse,
)
from tests.unit.test_workflow import WORKFLOW_SAMPLES

SAMPLES: list[Event] = [
    enroll(event_id="e-enr", tier="FAM", end=date(2026, 6, 30), member="M000001-D1", relationship="spouse"),
    enroll(event_id="e-enr-min"),
    rate(78_412, event_id="e-rate", month_through=date(2026, 6, 30)),
    rate(6_450, event_id="e-rate-open", plan="DELTA-PPO", employee=0),
    bill(78_412, event_id="e-bill", due_on=date(2026, 1, 15)),
    bill(1_212, event_id="e-bill-direct", agency=None, plan="VSP-VISION"),
    pay(78_412, event_id="e-pay", trace="TRN1", remittance="R1"),
    pay(1_00, event_id="e-pay-nomonth", month=None, method="check", payer="M000001"),
    reverse("P-e-pay", event_id="e-rev"),
    adjust(-1_234, event_id="e-adj", plan="UMP-CLASSIC"),
    adjust(5, event_id="e-adj-noplan"),
    day(date(2026, 1, 31), event_id="e-day"),
    RemittanceReceived(
        event_id="e-remit", account_id="payer:AG-001", effective_on=JAN, occurred_at=T0, remittance_id="R1",
        payer_id="AG-001", payee_id="PE-1", method="ach", payment_date=JAN, trace_number="TRN1",
        total_cents=78_412, lines_total_cents=78_412, line_count=1,
    ),
    RemittanceLinePosted(
        event_id="e-remit-line", account_id="payer:AG-001", effective_on=JAN, occurred_at=T0, remittance_id="R1",
        trace_number="TRN1", payer_id="AG-001", line_account_id="M000001", payment_id="R1-1", coverage_month=JAN,
        amount_cents=78_412,
    ),
    RemittanceFunded(
        event_id="e-remit-funded", account_id="M000001", effective_on=JAN, occurred_at=T0, remittance_id="R1",
        trace_number="TRN1", payment_ids=("R1-1",), funding_payment_id="ACH-1",
    ),
    RefundIssued(
        event_id="e-refund", account_id="M000001", effective_on=JAN, occurred_at=T0, refund_id="RF1",
        payee_id="AG-001", amount_cents=78_412, method="check", reason="paid after termination",
        payment_id="P-e-pay",
    ),
    RefundIssued(
        event_id="e-refund-credit", account_id="M000001", effective_on=JAN, occurred_at=T0, refund_id="RF2",
        payee_id="M000001", amount_cents=1_500, method="ach", reason="credit on a closed account",
        coverage_month=JAN,
    ),
    RefundReturned(
        event_id="e-refund-back", account_id="M000001", effective_on=JAN, occurred_at=T0, refund_id="RF2",
        reason="check returned",
    ),
    CashApplied(
        event_id="e-apply", account_id="X999", effective_on=JAN, occurred_at=T0, application_id="CA1",
        payment_id="P-typo", to_account_id="M000001", to_coverage_month=JAN, amount_cents=78_412,
        reason="member id typed wrong",
    ),
    BillingCycleClosed(
        event_id="e-cycle", account_id="*", effective_on=JAN, occurred_at=T0, cycle_month=JAN,
    ),
    elect(340_000, event_id="e-fsa-elect"),
    elect(375_000, event_id="e-fsa-elect-mfs", account_type="dependent_care", filing="married_filing_separately"),
    contribute(14_423, event_id="e-fsa-contrib", on=date(2026, 1, 15)),
    claim(12_000, event_id="e-fsa-claim", service=date(2026, 2, 3), submitted=date(2026, 2, 10)),
    claim(12_000, event_id="e-fsa-claim-year", service=date(2027, 3, 1), year=2026, account_type="dependent_care"),
    NoticeIssued(
        event_id="e-notice", account_id="payer:AG-001", effective_on=FEB, occurred_at=T0, notice_id="N1",
        recipient="agency_coordinator", recipient_id="AG-001", discrepancy_ids=("d1", "d2"), known_at=T0,
        document_sha256="0" * 64,
    ),
    *WORKFLOW_SAMPLES,
]

OUTPUT_SAMPLES: list[Event] = [
    DiscrepancyOpened(
        event_id="d1:opened", account_id="M000001", effective_on=JAN, occurred_at=T0, discrepancy_id="d1",
        kind="underpaid", coverage_month=JAN, payer_id="AG-001", expected_cents=78_412, actual_cents=70_000,
        cause_event_ids=("e-bill", "e-pay"), explanation="short", action="collect",
        actor="agency_coordinator",
    ),
    DiscrepancyAmountChanged(
        event_id="d1:changed:e-pay2", account_id="M000001", effective_on=JAN, occurred_at=T0,
        discrepancy_id="d1", kind="underpaid", coverage_month=JAN, previous_expected_cents=78_412,
        previous_actual_cents=50_000, expected_cents=78_412, actual_cents=70_000,
        changing_event_ids=("e-pay2",), explanation="short",
    ),
    DiscrepancySuperseded(
        event_id="d2:superseded", account_id="M000001", effective_on=JAN, occurred_at=T0,
        discrepancy_id="d2", kind="wrong_rate", coverage_month=JAN, superseding_event_ids=("e-chg",),
        superseded_by="d3", explanation="explained",
    ),
    DiscrepancyResolved(
        event_id="d1:resolved", account_id="M000001", effective_on=JAN, occurred_at=T0, discrepancy_id="d1",
        kind="underpaid", coverage_month=JAN, resolving_event_ids=("e-pay3",), explanation="paid",
    ),
    FsaClaimAdjudicated(
        event_id="e-fsa-claim:adjudicated", account_id="M000001", effective_on=FEB, occurred_at=T0,
        source="benefits-ledger", causation_id="e-fsa-claim", claim_id="CL-1", account_type="dependent_care",
        plan_year=2026, decision="partially_approved", requested_cents=20_000, approved_cents=12_000,
        reason="only $120.00 contributed", available_before_cents=12_000, available_after_cents=0,
    ),
    DiscrepancyClosed(
        event_id="d1:closed", account_id="M000001", effective_on=JAN, occurred_at=T0, source="benefits-ledger",
        causation_id="e-waive", discrepancy_id="d1", kind="underpaid", coverage_month=JAN, status="waived",
        closing_event_ids=("e-waive",), user="sam", reason="hardship", adjustment_cents=-8_412,
        explanation="underpaid for 2026-01 waived by sam",
    ),
]


def _mutated(event: Event, **changes: Any) -> bytes:
    data = json.loads(encode(event))
    for name, value in changes.items():
        if value is _DELETE:
            del data[name]
        else:
            data[name] = value
    return json.dumps(data).encode()


_DELETE = object()


def _decode_error(raw: bytes) -> EventDecodeError:
    with pytest.raises(EventDecodeError) as info:
        decode_input(raw)
    return info.value


# -- round trips and canonical bytes ---------------------------------------------------------------


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: e.event_id)
def test_every_input_event_round_trips_through_encode_and_decode_equal(event: Event) -> None:
    decoded = decode_input(encode(event))
    assert decoded == event
    assert type(decoded) is type(event)
    assert decode_any(encode(event)) == event


def test_the_round_trip_samples_cover_every_input_event_type() -> None:
    assert {type(e) for e in SAMPLES} == set(INPUT_TYPES)


@pytest.mark.parametrize("event", OUTPUT_SAMPLES, ids=lambda e: e.event_id)
def test_every_output_event_round_trips_through_decode_output(event: Event) -> None:
    assert decode_output(encode(event)) == event
    assert decode_any(encode(event)) == event
    assert {type(e) for e in OUTPUT_SAMPLES} == set(OUTPUT_TYPES)


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: e.event_id)
def test_equal_events_encode_to_equal_canonical_bytes(event: Event) -> None:
    twin = type(event)(**{f: getattr(event, f) for f in event.__struct_fields__})
    assert twin == event and twin is not event
    assert encode(twin) == encode(event)
    assert body_hash(encode(twin)) == body_hash(encode(event))
    # decoding and re-encoding is a fixed point
    assert encode(decode_input(encode(event))) == encode(event)


def test_key_order_and_whitespace_on_the_wire_do_not_change_the_canonical_bytes() -> None:
    event = pay(78_412, event_id="e-order", trace="TRN9")
    data = json.loads(encode(event))
    shuffled = json.dumps(dict(reversed(list(data.items()))), indent=2).encode()
    assert shuffled != encode(event)
    assert encode(decode_input(shuffled)) == encode(event)


def test_events_differing_by_one_cent_have_different_bytes_and_hashes() -> None:
    a = bill(78_412, event_id="same-id", bill_id="B1")
    b = bill(78_413, event_id="same-id", bill_id="B1")
    assert encode(a) != encode(b)
    assert body_hash(encode(a)) != body_hash(encode(b))


def test_omitted_optional_fields_decode_to_their_defaults() -> None:
    event = pay(100, event_id="e-defaults")
    raw = _mutated(event, source=_DELETE, causation_id=_DELETE, schema_version=_DELETE,
                   remittance_id=_DELETE, trace_number=_DELETE)
    assert decode_input(raw) == event


# -- decode errors name the field ----------------------------------------------------------------

FIELD_ERRORS: list[tuple[str, Event, dict[str, Any], str]] = [
    ("missing amount_cents", pay(100), {"amount_cents": _DELETE}, "amount_cents"),
    ("missing bill_id", bill(100), {"bill_id": _DELETE}, "bill_id"),
    ("missing business_date", day(date(2026, 1, 31)), {"business_date": _DELETE}, "business_date"),
    ("amount as text", pay(100), {"amount_cents": "100"}, "amount_cents"),
    ("amount as float", bill(100), {"amount_cents": 100.5}, "amount_cents"),
    ("date not a date", bill(100), {"coverage_month": "soon"}, "coverage_month"),
    ("unknown method", pay(100), {"method": "bitcoin"}, "method"),
    ("negative bill amount", bill(100), {"amount_cents": -1}, "amount_cents"),
    ("payment amount zero", pay(100), {"amount_cents": 0}, "amount_cents"),
    ("rate shares do not sum", rate(1000), {"employee_cents": 151}, "total_cents"),
    ("negative rate share", rate(1000), {"employee_cents": -10, "employer_cents": 1010}, "total_cents"),
    ("rate month_from not first", rate(1000), {"month_from": "2026-01-02"}, "month_from"),
    ("rate through before from", rate(1000, month_from=FEB), {"month_through": "2026-01-31"},
     "month_through"),
    ("bill coverage_month not first", bill(100), {"coverage_month": "2026-01-15"}, "coverage_month"),
    ("payment coverage_month not first", pay(100), {"coverage_month": "2026-01-31"}, "coverage_month"),
    ("benefit_end before begin", enroll(), {"benefit_end": "2025-12-31"}, "benefit_end"),
    ("empty event_id", pay(100), {"event_id": ""}, "event_id"),
    ("empty account_id", pay(100), {"account_id": ""}, "account_id"),
    ("account event on broadcast id", pay(100), {"account_id": "*"}, "account_id"),
    ("enrollment on broadcast id", enroll(), {"account_id": "*"}, "account_id"),
    ("bill on broadcast id", bill(100), {"account_id": "*"}, "account_id"),
    ("rate on an account", rate(1000), {"account_id": "M000001"}, "account_id"),
    ("day closed on an account", day(date(2026, 1, 31)), {"account_id": "M000001"}, "account_id"),
    ("negative FSA election", elect(100), {"election_cents": -1}, "election_cents"),
    ("FSA election plan year not a year", elect(100), {"plan_year": 26}, "plan_year"),
    ("unknown FSA account type", elect(100), {"account_type": "limited_purpose"}, "account_type"),
    ("unknown tax filing status", elect(100), {"tax_filing_status": "mfs"}, "tax_filing_status"),
    ("FSA contribution zero", contribute(100, on=JAN), {"amount_cents": 0}, "amount_cents"),
    ("FSA claim negative", claim(100, service=JAN), {"amount_cents": -100}, "amount_cents"),
    ("FSA claim without service date", claim(100, service=JAN), {"service_date": _DELETE}, "service_date"),
    ("FSA claim plan year out of range", claim(100, service=JAN), {"plan_year": 10_000}, "plan_year"),
    ("missing type tag", pay(100), {"type": _DELETE}, "type"),
    ("unknown type tag", pay(100), {"type": "payment_teleported"}, "type"),
]


@pytest.mark.parametrize(("event", "changes", "field"), [c[1:] for c in FIELD_ERRORS],
                         ids=[c[0] for c in FIELD_ERRORS])
def test_a_decode_error_names_the_offending_field(event: Event, changes: dict[str, Any], field: str) -> None:
    error = _decode_error(_mutated(event, **changes))
    assert error.field == field
    assert error.reason and str(error) == error.reason


def test_a_negative_bill_amount_is_rejected_with_a_hint_to_post_an_adjustment() -> None:
    error = _decode_error(_mutated(bill(100), amount_cents=-1))
    assert "adjustment" in error.reason


def test_an_output_event_is_not_accepted_as_an_input_event() -> None:
    with pytest.raises(EventDecodeError):
        decode_input(encode(OUTPUT_SAMPLES[0]))


@pytest.mark.parametrize(
    "raw",
    [b"", b"{not json", b"\xff\xfe\x00", b"[1, 2]", b"null", b"42", b'{"type": "payment_received"'],
    ids=["empty", "broken json", "binary", "array", "null", "number", "truncated"],
)
def test_undecodable_bytes_raise_event_decode_error(raw: bytes) -> None:
    error = _decode_error(raw)
    assert isinstance(error, ValueError)
    assert error.reason


def test_malformed_json_says_it_is_not_json() -> None:
    assert _decode_error(b"{not json").reason.startswith("not JSON")


# -- schema versions and upcasting ----------------------------------------------------------------


def test_a_newer_schema_version_than_known_is_rejected_naming_schema_version() -> None:
    error = _decode_error(_mutated(pay(100), schema_version=2))
    assert error.field == "schema_version"
    assert "newer" in error.reason and "payment_received" in error.reason


def test_a_newer_schema_version_with_an_unknown_shape_is_still_rejected_as_newer() -> None:
    error = _decode_error(_mutated(pay(100), schema_version=7, amount_cents=_DELETE, amount={"cents": 1}))
    assert error.field == "schema_version"


# Stored bytes of a made-up payment_received version 1 that called the amount "amount".
PAYMENT_V1 = (
    b'{"type":"payment_received","event_id":"old-pay-1","account_id":"M000001",'
    b'"effective_on":"2025-11-04","occurred_at":"2025-11-04T14:12:00Z","source":"bank-820",'
    b'"schema_version":1,"payment_id":"P202511-M000001","coverage_month":"2025-11-01",'
    b'"amount":78412,"method":"payroll","payer_id":"AG-001","remittance_id":"R202511-AG-001",'
    b'"trace_number":"TRN202511001"}'
)


@pytest.fixture
def payment_v2(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Pretend payment_received is at version 2 and v1 called ``amount_cents`` ``amount``."""
    monkeypatch.setattr(codec, "UPCASTERS", dict(codec.UPCASTERS))
    monkeypatch.setitem(codec.CURRENT_VERSION, "payment_received", 2)
    monkeypatch.setattr(PaymentReceived, "SCHEMA_VERSION", 2)
    seen: list[dict[str, Any]] = []

    @codec.upcaster("payment_received", 1)
    def rename_amount(data: dict[str, Any]) -> dict[str, Any]:
        seen.append(dict(data))
        data = dict(data)
        data["amount_cents"] = data.pop("amount")
        return data

    return seen


def test_stored_version_1_bytes_are_upcast_to_the_current_version(payment_v2: list[dict[str, Any]]) -> None:
    event = decode_input(PAYMENT_V1)
    assert isinstance(event, PaymentReceived)
    assert event.amount_cents == 78_412
    assert event.schema_version == 2
    assert event.payment_id == "P202511-M000001"
    assert event.coverage_month == date(2025, 11, 1)
    assert event.trace_number == "TRN202511001"
    assert len(payment_v2) == 1 and payment_v2[0]["schema_version"] == 1


def test_upcast_events_are_still_checked_against_the_invariants(payment_v2: list[dict[str, Any]]) -> None:
    raw = PAYMENT_V1.replace(b'"amount":78412', b'"amount":0')
    error = _decode_error(raw)
    assert error.field == "amount_cents"


def test_an_upcast_result_that_does_not_fit_the_current_shape_names_the_field(
    payment_v2: list[dict[str, Any]],
) -> None:
    raw = PAYMENT_V1.replace(b'"amount":78412', b'"amount":"lots"')
    assert _decode_error(raw).field == "amount_cents"


def test_a_missing_upcaster_for_an_old_version_is_rejected_naming_schema_version(
    payment_v2: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(codec.CURRENT_VERSION, "payment_received", 3)
    monkeypatch.setattr(PaymentReceived, "SCHEMA_VERSION", 3)
    error = _decode_error(PAYMENT_V1)
    assert error.field == "schema_version"
    assert "no upcaster" in error.reason and "v2" in error.reason


def test_upcasters_chain_from_an_old_version_through_every_step(
    payment_v2: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(codec.CURRENT_VERSION, "payment_received", 3)
    monkeypatch.setattr(PaymentReceived, "SCHEMA_VERSION", 3)

    @codec.upcaster("payment_received", 2)
    def default_source(data: dict[str, Any]) -> dict[str, Any]:
        assert data["schema_version"] == 2
        return {**data, "source": data["source"] + "/v2"}

    event = decode_input(PAYMENT_V1)
    assert event.schema_version == 3
    assert event.source == "bank-820/v2"
    assert isinstance(event, PaymentReceived) and event.amount_cents == 78_412


def test_registering_two_upcasters_for_the_same_step_fails(payment_v2: list[dict[str, Any]]) -> None:
    with pytest.raises(AssertionError, match="two upcasters"):
        codec.upcaster("payment_received", 1)(lambda d: d)


def test_version_1_bytes_without_an_upcaster_registered_decode_as_today() -> None:
    # Guards the fixture above: after it, the real registry and versions are back.
    assert codec.CURRENT_VERSION["payment_received"] == PaymentReceived.SCHEMA_VERSION == 1
    assert ("payment_received", 1) not in codec.UPCASTERS
    assert decode_input(encode(pay(100, event_id="e-now"))).amount_cents == 100


def test_an_upcaster_failing_on_a_malformed_old_record_gives_event_decode_error(
    payment_v2: list[dict[str, Any]],
) -> None:
    raw = PAYMENT_V1.replace(b'"amount":78412,', b"")  # v1 record that lacks its amount entirely
    error = _decode_error(raw)
    assert error.field is not None


def test_invalid_utf8_inside_a_key_is_a_decode_error_not_a_crash() -> None:
    raw = encode(OUTPUT_SAMPLES[0]).replace(b'{"type"', b'{"\x80type"')
    with pytest.raises(EventDecodeError, match="not JSON"):
        decode_input(raw)


def test_every_event_type_defaults_schema_version_to_its_current_version() -> None:
    """A type moving to v2 must raise both SCHEMA_VERSION and the field default, or new events would
    encode as v1 and be upcast a second time."""
    import msgspec

    from events.types import INPUT_TYPES, OUTPUT_TYPES

    for cls in (*INPUT_TYPES, *OUTPUT_TYPES):
        field = next(f for f in msgspec.structs.fields(cls) if f.name == "schema_version")
        assert field.default == cls.SCHEMA_VERSION, cls.__name__
