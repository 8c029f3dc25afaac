"""Poison records, without services: every field bounded at the boundary, sums bounded in the fold.

A hypothesis property test generates values at and past every bound of every input event type: at
the bound the codec accepts them (or refuses them for another rule), past it the codec refuses them
naming the field. The batch processor dead-letters any such record, never raises, and its counts add
up (received = applied + duplicates + dead-lettered). The integration side is tests/faults/test_poison.py.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events import codec
from events.codec import (
    DATE_MAX,
    DATE_MIN,
    ID_CHARS_MAX,
    NESTING_MAX,
    RECORD_BYTES_MAX,
    TEXT_CHARS_MAX,
    EventDecodeError,
    check_bounds,
    decode_input,
)
from events.money import AMOUNT_CENTS_MAX
from events.types import (
    BROADCAST_ACCOUNT,
    INPUT_TYPES,
    AdjustmentPosted,
    BillingCycleClosed,
    CashApplied,
    DayClosed,
    DiscrepancyAssigned,
    DiscrepancyDismissed,
    DiscrepancyNoted,
    DiscrepancyReopened,
    DiscrepancyStatusSet,
    DiscrepancyWaived,
    DiscrepancyWrittenOff,
    EnrollmentChanged,
    Event,
    FsaClaimSubmitted,
    FsaContributionReceived,
    FsaElectionMade,
    NoticeIssued,
    PaymentReceived,
    PaymentReversed,
    PremiumBilled,
    RatePublished,
    RefundIssued,
    RefundReturned,
    RemittanceAdjustment,
    RemittanceFunded,
    RemittanceLinePosted,
    RemittanceReceived,
    RetroChangeApproved,
    RetroChangeRejected,
    WaiverApproved,
    WaiverRejected,
    tag_of,
)
from processor.batch import partition_for
from processor.bounds import SUM_CENTS_MAX, printable, sum_rejection
from processor.state import AccountState
from tests.unit.builders import ACCOUNT, PARTITIONS, TOPIC_OF, Feed, bill, make, pay, run

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
D0 = date(2026, 1, 1)
COMMON: dict[str, Any] = {"account_id": ACCOUNT, "effective_on": D0, "occurred_at": T0, "source": "test"}

# One valid event of every input type, with every optional bounded field set.
SAMPLES: list[Event] = [
    EnrollmentChanged(event_id="enr-1", **COMMON, member_id="M1", plan="PPO", coverage_line="health", tier="EMP",
                      action="add", benefit_begin=D0, benefit_end=date(2026, 12, 31), agency_id="AG1",
                      elected_on=D0, cobra_start=D0, reason="new hire", coverage_amount_cents=5_000_000,
                      birth_year=1980, causation_id="cause-1", relationship="self", status="cobra",
                      disability_extension=True, tax_dependent=False, qualifying_event="termination",
                      qualifying_event_on=D0, birth_date=date(1980, 3, 1), missing_elements=("DTP*348",)),
    RatePublished(event_id="rate-1", **{**COMMON, "account_id": BROADCAST_ACCOUNT}, rate_id="R1", plan="PPO",
                  tier="EMP", month_from=D0, month_through=date(2026, 12, 1), total_cents=100_000,
                  employee_cents=15_000, employer_cents=85_000),
    PremiumBilled(event_id="bill-1", **COMMON, bill_id="B1", coverage_month=D0, plan="PPO", tier="EMP",
                  amount_cents=100_000, due_on=date(2026, 1, 31), agency_id="AG1"),
    PaymentReceived(event_id="pay-1", **COMMON, payment_id="P1", coverage_month=D0, amount_cents=100_000,
                    method="payroll", payer_id="AG1", remittance_id="RM1", trace_number="T1", billed_cents=100_000,
                    adjustments=(RemittanceAdjustment(amount_cents=-5, reason="rounding"),), tax_treatment="pre_tax",
                    pay_frequency="biweekly", advice_only=False, plan="PPO", coverage_line="health"),
    PaymentReversed(event_id="rev-1", **COMMON, payment_id="P1", reason="returned NSF"),
    RefundIssued(event_id="ref-1", **COMMON, refund_id="RF1", payee_id="AG1", amount_cents=500, method="check",
                 reason="overpaid", payment_id="P1", coverage_month=D0),
    RefundReturned(event_id="rret-1", **COMMON, refund_id="RF1", reason="check returned"),
    CashApplied(event_id="cash-1", **COMMON, application_id="CA1", payment_id="P1", to_account_id="M2",
                to_coverage_month=D0, amount_cents=500, reason="keyed wrong"),
    AdjustmentPosted(event_id="adj-1", **COMMON, adjustment_id="A1", coverage_month=D0, amount_cents=-500,
                     reason="correction", plan="PPO"),
    DayClosed(event_id="day-1", **{**COMMON, "account_id": BROADCAST_ACCOUNT}, business_date=D0),
    BillingCycleClosed(event_id="cyc-1", **{**COMMON, "account_id": BROADCAST_ACCOUNT}, cycle_month=D0),
    RemittanceReceived(event_id="rem-1", **{**COMMON, "account_id": "payer:AG1"}, remittance_id="RM1",
                       payer_id="AG1", payee_id="PE1", method="ach", payment_date=D0, trace_number="T1",
                       total_cents=100_000, lines_total_cents=100_000, line_count=1, advice_only=False,
                       adjustments=(RemittanceAdjustment(amount_cents=-5, reason="rounding"),)),
    RemittanceLinePosted(event_id="rem-1:posted", **{**COMMON, "account_id": "payer:AG1"}, remittance_id="RM1",
                         payer_id="AG1", line_account_id=ACCOUNT, payment_id="P1", amount_cents=100_000,
                         trace_number="T1", coverage_month=D0, advice_only=False),
    RemittanceFunded(event_id="rem-1:funds:0123456789abcdef", **{**COMMON, "account_id": "payer:AG1"},
                     remittance_id="RM1", trace_number="T1", payment_ids=("P1", "P2"), funding_payment_id="P9"),
    FsaElectionMade(event_id="el-1", **COMMON, election_id="E1", member_id="M1", plan_year=2026,
                    account_type="dependent_care", election_cents=100_000, tax_filing_status="single"),
    FsaContributionReceived(event_id="con-1", **COMMON, contribution_id="C1", plan_year=2026,
                            account_type="health", amount_cents=1_000, payer_id="AG1"),
    FsaClaimSubmitted(event_id="cl-1", **COMMON, claim_id="CL1", account_type="health", service_date=D0,
                      amount_cents=1_000, plan_year=2026, description="office visit"),
    NoticeIssued(event_id="notice-1", **{**COMMON, "account_id": "payer:AG1"}, notice_id="N1",
                 recipient="agency_coordinator", recipient_id="AG1", discrepancy_ids=("d1", "d2"), known_at=T0,
                 document_sha256="0" * 64, channel="mail", template_version=1),
    *(cls(event_id=f"{tag_of(cls)}-1", **COMMON, discrepancy_id="d1", user="sam", role="specialist",
          reason="research done", agency_id="AG1", **extra)
      for cls, extra in (
          (DiscrepancyAssigned, {"assignee": "lee"}),
          (DiscrepancyNoted, {"note": "called the agency"}),
          (DiscrepancyStatusSet, {"work_status": "waiting_agency"}),
          (DiscrepancyWaived, {"amount_cents": -500}),
          (DiscrepancyWrittenOff, {"amount_cents": -500}),
          (WaiverApproved, {"request_event_id": "w-1"}),
          (WaiverRejected, {"request_event_id": "w-1"}),
          (RetroChangeApproved, {"amount_cents": 500}),
          (RetroChangeRejected, {}),
          (DiscrepancyDismissed, {}),
          (DiscrepancyReopened, {}),
      )),
]
assert {type(e) for e in SAMPLES} == set(INPUT_TYPES), "a sample of every input type"

# Words each kind of bound uses in its reason (so "refused for another rule" can be told apart).
BOUND_WORDS = ("out of range", "characters, more than", "control character", "is outside")


def _fields(event: Event) -> list[tuple[str, Any]]:
    """(field name, msgspec type info) of the fields of ``event`` the codec bounds."""
    out = []
    for f in msgspec.inspect.type_info(type(event)).fields:  # type: ignore[union-attr]
        if f.name in ("schema_version",) or _own_format(f.type):
            continue
        out.append((f.name, f.type))
    return out


def _own_format(info: Any) -> bool:
    """A field with a format of its own (a SHA-256 pattern, a version >= 1): refused by that rule first."""
    return any(getattr(info, attr, None) is not None for attr in ("pattern", "ge", "gt", "le", "lt"))


def _base_kind(info: Any) -> str | None:
    mi = msgspec.inspect
    if isinstance(info, mi.UnionType):
        kinds = [_base_kind(t) for t in info.types if not isinstance(t, mi.NoneType)]
        return next((k for k in kinds if k is not None), None)
    if isinstance(info, mi.StrType):
        return "str"
    if isinstance(info, mi.IntType):
        return "int"
    if isinstance(info, mi.DateType):
        return "date"
    if isinstance(info, mi.DateTimeType):
        return "datetime"
    return None


CASES = [(e, name, kind) for e in SAMPLES for name, info in _fields(e) if (kind := _base_kind(info))]


def test_every_bounded_field_of_every_input_type_is_covered() -> None:
    covered = {(tag_of(type(e)), name) for e, name, _ in CASES}
    assert ("payment_received", "amount_cents") in covered
    assert ("day_closed", "business_date") in covered
    assert ("enrollment_changed", "reason") in covered
    assert len(covered) == len(CASES) > 120


def _wire(event: Event, name: str, value: Any) -> bytes:
    data = msgspec.to_builtins(event)
    data[name] = msgspec.to_builtins(value)
    return json.dumps(data).encode()


def _limit(event: Event, name: str) -> int:
    if isinstance(event, CashApplied) and name == "event_id":
        return ID_CHARS_MAX - len(codec.DERIVED_PAYMENT_SUFFIX)  # its derived payment's id must fit too
    if isinstance(event, PaymentReceived | RemittanceReceived | RemittanceLinePosted) and name == "event_id":
        return ID_CHARS_MAX - codec.DERIVED_REMITTANCE_SUFFIX_CHARS  # so must the reports posted after it
    return TEXT_CHARS_MAX if name in codec.TEXT_FIELDS else ID_CHARS_MAX


def _value_strategy(name: str, kind: str, past: bool, limit: int = 0) -> st.SearchStrategy[Any]:
    if kind == "int":
        if past:
            return st.one_of(st.integers(AMOUNT_CENTS_MAX, 2**70), st.integers(-(2**70), -AMOUNT_CENTS_MAX),
                             st.sampled_from([2**63, 10**30, 2**62 + 1, AMOUNT_CENTS_MAX, -AMOUNT_CENTS_MAX]))
        return st.sampled_from([AMOUNT_CENTS_MAX - 1, -(AMOUNT_CENTS_MAX - 1), 0, 1])
    if kind in ("date", "datetime"):
        if past:
            days = st.one_of(st.dates(max_value=DATE_MIN - timedelta(days=1)),
                             st.dates(min_value=DATE_MAX + timedelta(days=1)),
                             st.sampled_from([date(9999, 12, 1), date(9999, 12, 31), date(1, 1, 1)]))
        else:
            days = st.sampled_from([DATE_MIN, DATE_MAX, date(2199, 12, 1)])
        if kind == "datetime":
            return days.map(lambda d: datetime(d.year, d.month, d.day, 12, tzinfo=UTC))
        return days
    limit = limit or (TEXT_CHARS_MAX if name in codec.TEXT_FIELDS else ID_CHARS_MAX)
    safe = st.characters(min_codepoint=0x20, max_codepoint=0x2FFF, blacklist_categories=("Cs", "Cc"))
    if not past:
        return st.text(safe, min_size=limit, max_size=limit)
    too_long = st.integers(limit + 1, limit + 9000).map(lambda n: "x" * n)
    control = st.tuples(st.text(safe, max_size=20), st.sampled_from(["\x00", "\x01", "\n", "\t", "\x1b", "\x7f",
                                                                     "\x85", "\x9f"]),
                        st.text(safe, max_size=20)).map("".join)
    return st.one_of(too_long, control)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_values_past_a_bound_are_refused_naming_the_field_and_values_at_it_are_not(data: st.DataObject) -> None:
    event, name, kind = data.draw(st.sampled_from(CASES))
    past = data.draw(st.booleans())
    value = data.draw(_value_strategy(name, kind, past, _limit(event, name)))
    raw = _wire(event, name, value)
    try:
        decoded = decode_input(raw, bytes_max=64 * 1024 * 1024)
    except EventDecodeError as exc:
        if past:
            assert exc.field == name, (name, value, exc.reason)
            assert any(w in exc.reason for w in BOUND_WORDS), exc.reason
        else:  # refused, but for another rule (a month must be a first, a broadcast account is '*', ...)
            assert not (exc.field == name and any(w in exc.reason for w in BOUND_WORDS)), (name, value, exc.reason)
        return
    assert not past, f"{tag_of(type(event))}.{name} = {value!r} passed the codec"
    assert getattr(decoded, name) == value


def test_every_sample_passes_the_codec_as_it_is() -> None:
    for event in SAMPLES:
        assert decode_input(codec.encode(event)) == event


@pytest.mark.parametrize("amount", [2**63, 10**30, 2**62 + 1])
def test_amounts_beyond_bigint_are_refused(amount: int) -> None:
    with pytest.raises(EventDecodeError, match="out of range") as err:
        decode_input(_wire(SAMPLES[3], "amount_cents", amount))
    assert err.value.field == "amount_cents"


def test_a_nested_adjustment_out_of_bounds_names_its_path() -> None:
    data = msgspec.to_builtins(SAMPLES[3])
    data["adjustments"] = [{"amount_cents": 1, "reason": "ok"}, {"amount_cents": 10**13, "reason": "x"}]
    with pytest.raises(EventDecodeError, match="10000000000000 is out of range") as err:
        decode_input(json.dumps(data).encode())
    assert err.value.field == "adjustments[1].amount_cents"
    data["adjustments"] = [{"amount_cents": 1, "reason": "tab\there"}]
    with pytest.raises(EventDecodeError, match="control character U\\+0009"):
        decode_input(json.dumps(data).encode())


@pytest.mark.parametrize("depth", [NESTING_MAX + 1, 1000, 100_000])
def test_json_nested_deeper_than_the_bound_is_refused_before_the_decoder_recurses(depth: int) -> None:
    raw = codec.encode(SAMPLES[2])[:-1] + b',"extra":' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(EventDecodeError, match=f"nested deeper than {NESTING_MAX}"):
        decode_input(raw)


def test_nesting_at_the_bound_and_brackets_inside_strings_are_fine() -> None:
    inner = b"[" * (NESTING_MAX - 1) + b"]" * (NESTING_MAX - 1)  # inside the event's object: NESTING_MAX
    raw = codec.encode(SAMPLES[2])[:-1] + b',"extra":' + inner + b"}"
    assert decode_input(raw) == SAMPLES[2]
    event = msgspec.structs.replace(SAMPLES[2], source="[{" * 100)
    assert decode_input(codec.encode(event)) == event


def test_a_record_over_the_size_bound_is_refused_whatever_it_holds() -> None:
    event = msgspec.structs.replace(SAMPLES[2], source="x")
    raw = codec.encode(event)[:-1] + b',"padding":"' + b"p" * RECORD_BYTES_MAX + b'"}'
    with pytest.raises(EventDecodeError, match="record_bytes_max"):
        decode_input(raw)
    assert decode_input(raw, bytes_max=len(raw)) == event  # unknown fields are ignored: only the size


def test_check_bounds_is_what_publish_and_the_processor_both_use() -> None:
    bad = msgspec.structs.replace(SAMPLES[3], payer_id="AG\x001")
    with pytest.raises(EventDecodeError, match="control character U\\+0000 at position 2") as err:
        check_bounds(bad)
    assert err.value.field == "payer_id"


# -------------------------------------------------------------------------------- sums in the fold


def test_a_bill_that_would_take_a_month_past_the_sum_bound_is_dead_lettered() -> None:
    proc, store = make()
    feed = Feed()
    near = AMOUNT_CENTS_MAX - 1
    n = SUM_CENTS_MAX // near  # this many fit: the next one would reach the bound
    records = [feed.record(bill(near, bill_id=f"B{i}")) for i in range(n + 1)]
    result = run(proc, store, records)
    assert result.applied == n
    [dead] = store.dead_letters()
    assert dead.offset == n and dead.field == "amount_cents"
    assert "beyond the ledger's bound" in dead.reason and "2026-01" in dead.reason
    counts = store.counts()
    assert counts.received == len(records) == counts.applied + counts.duplicates + counts.dead_lettered


def test_a_payment_that_could_take_a_payers_unapplied_cash_past_the_bound_is_dead_lettered() -> None:
    proc, store = make()
    feed = Feed()
    near = AMOUNT_CENTS_MAX - 1
    n = SUM_CENTS_MAX // near
    # held cash (no month) of one payer, spread over many accounts so no month reaches the bound
    payments = [pay(near, month=None, account=f"M{i:05d}", payer="AG-BIG") for i in range(n + 1)]
    half = (n + 1) // 2
    run(proc, store, [feed.record(p) for p in payments[:half]])  # across two batches: the store's total counts
    run(proc, store, [feed.record(p) for p in payments[half:]])
    assert store.payer_unapplied()["AG-BIG"] == n * near
    [dead] = store.dead_letters()
    assert dead.event_id == payments[-1].event_id
    assert "payer AG-BIG's unapplied cash" in dead.reason
    counts = store.counts()
    assert counts.received == n + 1 == counts.applied + counts.dead_lettered


def test_sum_rejection_is_pure_and_says_nothing_for_ordinary_amounts() -> None:
    account = AccountState(account_id=ACCOUNT, partition=0)
    assert sum_rejection(account, bill(78_412)) is None
    assert sum_rejection(None, pay(78_412), payer_total=SUM_CENTS_MAX - 78_412 - 1) is None
    assert sum_rejection(None, pay(78_412), payer_total=SUM_CENTS_MAX - 78_412) is not None


def test_dead_letter_reasons_are_printable_and_bounded() -> None:
    assert printable("bad 'a\x00b'") == "bad 'a\\x00b'"
    long = printable("x" * 10_000)
    assert len(long) <= 2000 and long.endswith("more characters)")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_poison_record_is_dead_lettered_and_the_partition_goes_on(data: st.DataObject) -> None:
    event, name, kind = data.draw(st.sampled_from([c for c in CASES if not type(c[0]).BROADCAST]))
    value = data.draw(_value_strategy(name, kind, True, _limit(event, name)))
    proc, store = make()
    feed = Feed()
    before = feed.record(bill(10_000, bill_id="before"))
    poison_raw = _wire(event, name, value)
    key = str(value if name == "account_id" else event.account_id).encode()
    poison = feed.raw(TOPIC_OF[tag_of(type(event))], partition_for(key, PARTITIONS), key, poison_raw)
    after = feed.record(pay(10_000, payment_id="after"))
    result = run(proc, store, [before, poison, after])
    assert result.applied == 2
    [dead] = store.dead_letters()
    assert dead.offset == poison.offset and dead.raw == poison_raw
    assert dead.field == name and dead.reason.startswith("undecodable: "), dead.reason
    assert "\x00" not in dead.reason and len(dead.reason) <= 2000
    counts = store.counts()
    assert counts.received == 3 == counts.applied + counts.duplicates + counts.dead_lettered


# -------------------------------------------------------------------------------- adapters: an 820


def test_ingest_of_an_820_with_an_18_digit_rmr04_fails_that_line_naming_the_element(
    tmp_path: Any, capsys: pytest.CaptureFixture[str],
) -> None:
    from pathlib import Path

    from processor.cli import main

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "x12" / "820_X218_list_bill_payment.edi"
    text = fixture.read_text()
    assert "RMR*IG*555666**30~" in text
    bad = tmp_path / "remittance.820"
    bad.write_text(text.replace("RMR*IG*555666**30~", "RMR*IG*555666**123456789012345678~"))
    code = main(["--json", "ingest", "--dry-run", str(bad)])
    report = json.loads(capsys.readouterr().out)
    assert code == 1
    [file] = report["files"]
    rmr04 = [e for e in file["errors"] if e["element"] == "RMR04"]
    assert len(rmr04) == 1, file["errors"]
    assert rmr04[0]["segment_id"] == "RMR" and rmr04[0]["line"]
    assert "beyond the ledger's bound" in rmr04[0]["reason"]
    # the member with the bad line is not published; nothing that passed carries an unbounded amount
    assert file["events"], "the other members are still ingested"
    for event in file["events"]:
        check_bounds(decode_input(json.dumps(event).encode()))
        assert abs(event.get("amount_cents", 0)) < AMOUNT_CENTS_MAX
