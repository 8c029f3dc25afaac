"""X12 as real senders write it: the hand-written files in tests/fixtures/x12/handwritten, and mutated
copies of the real samples. Codes the samples never use, situational elements left out, take-backs,
adjustments at every level, periods of several months, several transaction sets and interchanges,
other separators, cut-short and junk files."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from events import codec
from events.adapters import IngestLimits, MemberIds, ParsedFile, parse_bytes, parse_path
from events.adapters.common import split_exactly
from events.types import EnrollmentChanged, PaymentReceived, RemittanceAdjustment, RemittanceReceived
from tests.fixtures import X12_SAMPLES

HAND = X12_SAMPLES / "handwritten"
FAMILY = X12_SAMPLES / "834_pyx12_deident_family.txt"
TERM = X12_SAMPLES / "834_pyx12_deident_term.txt"
LIST_BILL = X12_SAMPLES / "820_X218_list_bill_payment.edi"
REMITTANCE_ONLY = X12_SAMPLES / "820_X218_list_bill_remittance_only.edi"
IDS = MemberIds(b"test-key")


def parse(path: Path, limits: IngestLimits | None = None) -> ParsedFile:
    return parse_path(path, IDS, limits)


def payments(result: ParsedFile) -> list[PaymentReceived]:
    return [e for e in result.events if isinstance(e, PaymentReceived)]


def remittances(result: ParsedFile) -> list[RemittanceReceived]:
    return [e for e in result.events if isinstance(e, RemittanceReceived)]


def enrollments(result: ParsedFile) -> list[EnrollmentChanged]:
    return [e for e in result.events if isinstance(e, EnrollmentChanged)]


def rewrite(tmp_path: Path, source: Path, *pairs: tuple[str, str], name: str = "mutated.x12") -> Path:
    text = source.read_text()
    for old, new in pairs:
        assert text.count(old) == 1, f"{old!r} must occur once in {source.name}"
        text = text.replace(old, new)
    target = tmp_path / name
    target.write_text(text)
    return target


def test_every_hand_written_file_ingests_without_an_error_and_every_event_is_the_codecs() -> None:
    files = sorted(p for p in HAND.iterdir() if p.suffix in (".edi", ".txt"))
    assert len(files) == 11
    for path in files:
        result = parse(path)
        assert result.errors == [], (path.name, [e.text() for e in result.errors])
        assert result.discrepancies == [], path.name
        assert result.events, path.name
        for event in result.events:
            assert codec.decode_input(codec.encode(event)) == event


# -- 820: money or advice (BPR01, BPR04) --------------------------------------------------------------


def test_bpr04_non_is_remittance_advice_whose_every_line_is_an_advice_event() -> None:
    result = parse(HAND / "820_advice_bpr01_i_bpr04_non.edi")
    assert result.errors == [] and result.discrepancies == []
    [remit] = remittances(result)
    assert (remit.advice_only, remit.method, remit.total_cents, remit.lines_total_cents, remit.line_count) == (
        True, "none", 168_025, 168_025, 5)
    lines = payments(result)
    assert [(p.account_id, p.amount_cents, p.advice_only, p.method, p.trace_number) for p in lines] == [
        ("M1001", 81_250, True, "none", "ADV20260305"), ("M1002", 125_000, True, "none", "ADV20260305"),
        ("M1003", 2_400, True, "none", "ADV20260305"), ("M1004", -81_250, True, "none", "ADV20260305"),
        ("M1005", 40_625, True, "none", "ADV20260305")]
    assert {p.coverage_month for p in lines} == {date(2026, 2, 1)}


def test_bpr01_u_split_payment_and_remittance_is_advice_whose_money_moves_by_ach() -> None:
    result = parse(HAND / "820_advice_bpr01_u.edi")
    [remit] = remittances(result)
    assert (remit.advice_only, remit.method, remit.total_cents) == (True, "ach", 162_500)
    assert [(p.amount_cents, p.advice_only, p.method) for p in payments(result)] == [
        (81_250, True, "ach"), (81_250, True, "ach")]


def test_the_remittance_only_sample_bpr01_u_is_advice() -> None:
    result = parse(REMITTANCE_ONLY)
    assert result.errors == []
    assert {e.advice_only for e in result.events if isinstance(e, PaymentReceived | RemittanceReceived)} == {True}


@pytest.mark.parametrize(("code", "advice"), [("C", False), ("D", False), ("X", False), ("I", True), ("U", True),
                                              ("P", True)])
def test_every_bpr01_code_of_the_guide_is_money_or_advice_as_it_means(tmp_path: Path, code: str,
                                                                      advice: bool) -> None:
    result = parse(rewrite(tmp_path, LIST_BILL, ("BPR*C*255*C*ACH", f"BPR*{code}*255*C*ACH")))
    assert result.errors == []
    assert {e.advice_only for e in result.events if isinstance(e, PaymentReceived | RemittanceReceived)} == {advice}
    assert len(payments(result)) == 6
    if code == "P":
        assert any("prenotification" in n for n in result.notices)
    if code == "D":
        assert any("make payment only" in n for n in result.notices)


@pytest.mark.parametrize(("code", "method"), [("ACH", "ach"), ("CHK", "check"), ("FWT", "eft"), ("BOP", "eft"),
                                              ("SWT", "eft"), ("NON", "none")])
def test_every_bpr04_payment_method_of_the_guide_is_accepted(tmp_path: Path, code: str, method: str) -> None:
    result = parse(rewrite(tmp_path, LIST_BILL, ("BPR*C*255*C*ACH", f"BPR*C*255*C*{code}")))
    assert [e for e in result.errors if e.element != "BPR05"] == []  # pyx12 may ask BPR05 for an ACH only
    assert {e.method for e in result.events if isinstance(e, PaymentReceived | RemittanceReceived)} == {method}
    assert {p.advice_only for p in payments(result)} == {method == "none"}


def test_a_payment_method_outside_the_code_list_is_an_error_on_bpr04_and_nothing_is_posted(tmp_path: Path) -> None:
    result = parse(rewrite(tmp_path, LIST_BILL, ("BPR*C*255*C*ACH", "BPR*C*255*C*XYZ")))
    assert [e.element for e in result.errors if e.segment_id == "BPR"] == ["BPR04"]
    assert result.events == []


# -- 820: take-backs, adjustments, periods ----------------------------------------------------------


def test_a_negative_rmr04_is_a_take_back_for_its_month() -> None:
    result = parse(HAND / "820_takeback_negative_rmr04.edi")
    assert [(p.account_id, p.coverage_month, p.amount_cents) for p in payments(result)] == [
        ("M1001", date(2026, 3, 1), 81_250), ("M1004", date(2026, 2, 1), -31_250)]
    [remit] = remittances(result)
    assert (remit.total_cents, remit.lines_total_cents) == (50_000, 50_000)


def test_a_line_of_zero_is_refused_naming_rmr04_and_the_remittance_no_longer_balances(tmp_path: Path) -> None:
    result = parse(rewrite(tmp_path, HAND / "820_takeback_negative_rmr04.edi", ("**-312.50~", "**0~")))
    [error] = result.errors
    assert (error.segment_id, error.element, error.line) == ("RMR", "RMR04", 14)
    assert "zero" in error.reason
    assert [p.account_id for p in payments(result)] == ["M1001"]
    [mismatch] = result.discrepancies
    assert (mismatch.expected_cents, mismatch.actual_cents) == (81_250, 50_000)


def test_adx_at_remittance_and_line_level_balance_the_remittance() -> None:
    result = parse(HAND / "820_adx_remittance_and_line_level.edi")
    assert result.discrepancies == []
    [remit] = remittances(result)
    assert (remit.total_cents, remit.lines_total_cents) == (161_999, 172_499)
    assert remit.adjustments == (RemittanceAdjustment(amount_cents=-2_500, reason="53"),
                                 RemittanceAdjustment(amount_cents=-8_000, reason="52", account_id="M1001"))
    assert remit.total_cents == remit.lines_total_cents + sum(a.amount_cents for a in remit.adjustments)
    lines = {p.account_id: p for p in payments(result)}
    assert lines["M1001"].adjustments == (RemittanceAdjustment(amount_cents=-1, reason="H6"),)
    assert (lines["M1001"].amount_cents, lines["M1001"].billed_cents) == (81_249, 81_250)
    organization = lines["AG0000004"]  # 2000A: the organization's own summary line
    assert (organization.amount_cents, organization.plan, organization.coverage_line) == (10_000, "GROUP-AG4", None)


def test_a_remittance_level_adjustment_that_does_not_balance_is_a_total_mismatch_naming_it(tmp_path: Path) -> None:
    result = parse(rewrite(tmp_path, HAND / "820_adx_remittance_and_line_level.edi", ("ADX*-80.00*52", "ADX*-8.00*52")))
    [mismatch] = result.discrepancies
    assert (mismatch.kind, mismatch.expected_cents, mismatch.actual_cents) == (
        "remittance_total_mismatch", 169_199, 161_999)
    assert "2 remittance-level ADX01 -3300 cents" in mismatch.reason


def test_a_coverage_period_of_three_months_is_one_payment_a_month_split_exactly() -> None:
    result = parse(HAND / "820_period_several_months.edi")
    quarter = [p for p in payments(result) if p.account_id == "M1001"]
    assert [(p.event_id, p.payment_id, p.coverage_month, p.amount_cents, p.billed_cents,
             [a.amount_cents for a in p.adjustments]) for p in quarter] == [
        ("820:AG0000004:QTR0305:1:2026-01", "QTR0305-1-202601", date(2026, 1, 1), 81_250, 81_251, [-1]),
        ("820:AG0000004:QTR0305:1:2026-02", "QTR0305-1-202602", date(2026, 2, 1), 81_250, 81_250, []),
        ("820:AG0000004:QTR0305:1:2026-03", "QTR0305-1-202603", date(2026, 3, 1), 81_250, 81_250, [])]
    # no DTM of its own: the header's DTM*582 (January and February), the odd cent to January
    header = [(p.coverage_month, p.amount_cents) for p in payments(result) if p.account_id == "M1002"]
    assert header == [(date(2026, 1, 1), 40_626), (date(2026, 2, 1), 40_625)]
    [remit] = remittances(result)
    assert remit.line_count == 2 and remit.lines_total_cents == sum(p.amount_cents for p in payments(result))


def test_a_line_too_small_to_split_over_its_months_is_refused_naming_rmr04(tmp_path: Path) -> None:
    result = parse(rewrite(tmp_path, HAND / "820_period_several_months.edi",
                           ("RMR*IG*GRP-77**812.51", "RMR*IG*GRP-77**0.01")))
    [error] = result.errors
    assert (error.segment_id, error.element) == ("RMR", "RMR04") and "2 months" in error.reason


def test_a_coverage_period_ending_before_it_begins_is_an_error_on_dtm06(tmp_path: Path) -> None:
    result = parse(rewrite(tmp_path, HAND / "820_period_several_months.edi",
                           ("RD8*20260101-20260331", "RD8*20260331-20260101")))
    assert [(e.segment_id, e.element) for e in result.errors] == [("DTM", "DTM06")]
    assert "M1001" not in {p.account_id for p in payments(result)}


@given(amount=st.integers(-10**11, 10**11), parts=st.integers(1, 60))
def test_an_amount_split_over_months_sums_exactly_and_the_remainder_goes_to_the_earliest(amount: int,
                                                                                         parts: int) -> None:
    split = split_exactly(amount, parts)
    assert sum(split) == amount and len(split) == parts
    assert max(map(abs, split)) - min(map(abs, split)) <= 1
    assert [abs(x) for x in split] == sorted((abs(x) for x in split), reverse=True), "earliest months first"


def test_rmr01_policy_qualifiers_name_the_plan_and_coverage_line_the_others_do_not(tmp_path: Path) -> None:
    advice_file = parse(HAND / "820_advice_bpr01_i_bpr04_non.edi")
    advice = {p.account_id: (p.plan, p.coverage_line) for p in payments(advice_file)}
    assert advice == {"M1001": ("POLH-1001", "health"), "M1002": ("POLH-1002", "health"),
                      "M1003": ("POLL-1003", "life"), "M1004": ("POLH-1004", "health"), "M1005": ("GRP-77", None)}
    # the list bill: IG policies, two for John Doe (777222), one line each
    doe = [(p.plan, p.coverage_line) for p in payments(parse(LIST_BILL)) if p.account_id == "777222"]
    assert doe == [("555666", None), ("555667", None)]
    # CT (contract number) identifies the member's contract, not a plan; here it is even the SSN
    only = payments(parse(REMITTANCE_ONLY))
    assert {(p.plan, p.coverage_line) for p in only} == {(None, None)}


def test_a_policy_number_equal_to_an_ssn_of_the_file_is_never_a_plan(tmp_path: Path) -> None:
    path = rewrite(tmp_path, REMITTANCE_ONLY, ("RMR*CT*163910163", "RMR*IG*163910163"))
    assert {p.plan for p in payments(parse(path))} == {None}


# -- envelopes: several transaction sets, interchanges, separators --------------------------------


def test_two_transaction_sets_in_one_interchange_each_give_their_remittance() -> None:
    result = parse(HAND / "820_two_transaction_sets_crlf.edi")
    assert [(r.payer_id, r.trace_number, r.total_cents) for r in remittances(result)] == [
        ("AG0000004", "TWO0001", 81_250), ("AG0000005", "TWO0002", 40_625)]
    assert result.accepted == {3: 2, 13: 2}, "events per transaction set, by the line of its ST"


def test_other_separators_give_the_events_a_star_and_tilde_file_gives() -> None:
    text = (HAND / "820_separators_bar_and_bang.edi").read_text()
    assert "*" not in text and "~" not in text and "\n" not in text
    plain = text.replace("|", "*").replace("!", "~\n")
    assert parse(HAND / "820_separators_bar_and_bang.edi").events == parse_bytes(plain.encode(), "p", IDS).events


def test_two_interchanges_in_one_file_each_with_its_own_separators() -> None:
    result = parse(HAND / "834_two_interchanges.txt")
    assert result.errors == []
    assert [(e.event_id, e.account_id, e.agency_id, e.coverage_line) for e in enrollments(result)] == [
        ("834:AGENCY4:000004008:4008:0001:1:1", "M3001", "AG0000004", "health"),
        ("834:AGENCY5:000005008:5008:0001:1:1", "M3002", "AG0000005", "dental")]
    assert sorted(result.accepted) == [3, 17]


def test_an_834_and_an_820_in_one_file_are_both_read(tmp_path: Path) -> None:
    path = tmp_path / "both.x12"
    path.write_text(FAMILY.read_text() + LIST_BILL.read_text())
    result = parse(path)
    assert result.errors == []
    assert (len(enrollments(result)), len(payments(result)), len(remittances(result))) == (3, 6, 1)


def test_a_repeated_interchange_control_number_is_an_error_on_the_second_isa13(tmp_path: Path) -> None:
    path = tmp_path / "twice.x12"
    path.write_text(FAMILY.read_text() * 2)
    result = parse(path)
    assert [(e.line, e.segment_id, e.element, e.code) for e in result.errors] == [(30, "ISA", "ISA13", "025")]


def test_text_after_the_last_interchange_is_an_error_and_the_interchange_is_read(tmp_path: Path) -> None:
    path = tmp_path / "tail.x12"
    path.write_text(FAMILY.read_text() + "PS: call me about the new hires\n")
    result = parse(path)
    [error] = result.errors
    assert (error.line, error.segment_id) == (29, "IEA") and "not an X12 interchange" in error.reason
    assert len(enrollments(result)) == 3


# -- cut short, junk, empty segments: never silent ----------------------------------------------------


def test_half_an_820_is_an_error_naming_each_missing_trailer_and_posts_nothing() -> None:
    data = LIST_BILL.read_bytes()
    half = data[:data.index(b"ENT*3")]
    result = parse_bytes(half, "half.edi", IDS)
    assert result.events == []
    missing = {e.segment_id for e in result.errors if e.reason.startswith("Mandatory segment")}
    assert missing == {"SE", "GE", "IEA"}
    assert any("has no SE trailer" in e.reason and e.segment_id == "ST" for e in result.errors)


def test_half_an_834_publishes_none_of_its_members(tmp_path: Path) -> None:
    text = FAMILY.read_text()
    result = parse_bytes(text[:text.index("INS*N*19")].encode(), "half.834", IDS)
    assert result.events == []
    assert {e.segment_id for e in result.errors if e.reason.startswith("Mandatory segment")} == {"SE", "GE", "IEA"}
    assert any("none of its 2 members is ingested" in e.reason for e in result.errors)


def test_a_last_segment_without_its_terminator_is_an_error(tmp_path: Path) -> None:
    data = LIST_BILL.read_bytes().rstrip(b"~\n")
    result = parse_bytes(data, "cut.edi", IDS)
    assert any("have no segment terminator" in e.reason for e in result.errors)
    assert any(e.segment_id == "IEA" and "missing" in e.reason for e in result.errors)


def test_an_empty_segment_stops_reading_with_an_error_that_says_so(tmp_path: Path) -> None:
    result = parse(rewrite(tmp_path, FAMILY, ("DMG*D8*19770303*F~\n", "DMG*D8*19770303*F~\n~\n")))
    assert any("follow an empty segment" in e.reason for e in result.errors)
    assert len(enrollments(result)) == 0, "the transaction set was cut short: nothing of it"


def test_junk_after_an_x12_header_stops_at_the_error_cap_and_says_so() -> None:
    head = LIST_BILL.read_bytes()[:300]
    junk = b"".join(b"X%dY*%d*ZZ~\n" % (i, i) for i in range(200_000))
    result = parse_bytes(head + junk, "junk.edi", IDS, IngestLimits(max_errors=25))
    assert result.events == []
    assert len(result.errors) == 26
    assert "stopped after 25 errors (setting ingest_errors_max)" in result.errors[-1].reason


def test_csv_and_json_lines_stop_at_the_error_cap_and_say_so() -> None:
    lines = b"".join(b'{"type":"payment_received","event_id":"e%d"}\n' % i for i in range(100))
    result = parse_bytes(lines, "j.jsonl", IDS, IngestLimits(max_errors=10))
    assert result.events == [] and len(result.errors) == 11
    assert "ingest_errors_max" in result.errors[-1].reason
    header = b"event_id,account_id,effective_on,occurred_at,payment_id,coverage_month,amount_cents,method,payer_id\n"
    rows = b"".join(b"p-%d,M1,2026-01-05,soon,P1,2026-01-01,1,ach,AG\n" % i for i in range(100))
    result = parse_bytes(header + rows, "p.csv", IDS, IngestLimits(max_errors=10))
    assert result.events == [] and len(result.errors) == 11


def test_an_error_quoting_control_characters_escapes_them() -> None:
    data = LIST_BILL.read_bytes().replace(b"ENT*3*2J", b"E\x1b[31mNT*3*2J")
    result = parse_bytes(data, "esc.edi", IDS)
    assert result.errors
    for e in result.errors:
        assert e.reason.isprintable() and (e.segment_id is None or e.segment_id.isprintable())


# -- 834: HD05 absent, and the codes the samples never use -------------------------------------------


def test_hd05_absent_is_derived_from_the_people_the_file_covers_for_that_coverage() -> None:
    result = parse(HAND / "834_hd05_absent_derivable.txt")
    assert result.errors == []
    got = [(e.member_id, e.relationship, e.coverage_line, e.tier, e.missing_elements) for e in enrollments(result)]
    assert got == [
        ("M4001", "self", "health", "FAM", ()), ("M4001", "self", "dental", "EMP", ()),
        ("M4002", "spouse", "health", "FAM", ()), ("M4003", "child", "health", "FAM", ()),
        ("M4004", "child", "health", "FAM", ()),
        ("M4101", "self", "vision", "ESP", ()), ("M4102", "domestic_partner", "vision", "ESP", ())]
    assert sum("derived" in n for n in result.notices) == 7


def test_hd05_absent_and_not_derivable_gives_tier_none_and_names_the_element_and_where() -> None:
    result = parse(HAND / "834_hd05_absent_not_derivable.txt")
    assert result.errors == []
    change, termination = enrollments(result)
    assert (change.action, change.tier, change.plan) == ("change", None, "UMP-PLUS")
    assert change.missing_elements == ("HD05 (file 834_hd05_absent_not_derivable.txt, line 10, segment 8)",)
    assert (termination.action, termination.tier, termination.missing_elements) == ("terminate", None, ())


def test_hd05_on_another_loop_of_the_family_is_the_tier_of_a_loop_without_it(tmp_path: Path) -> None:
    # the family sample with its single HD05 (FAM, subscriber's) and a child who sends a health loop of its own
    path = rewrite(tmp_path, FAMILY,
                   ("DMG*D8*20100612*M~\n", "DMG*D8*20100612*M~\nHD*021**PPO~\nDTP*348*D8*20260401~\n"),
                   ("SE*25*0001", "SE*27*0001"))
    result = parse(path)
    assert result.errors == []
    assert [e.tier for e in enrollments(result)] == ["FAM", "FAM", "FAM"]
    [notice] = [n for n in result.notices if "HD05" in n]
    assert ":27:" in notice and "tier FAM from another coverage loop" in notice


def test_codes_the_samples_never_use_are_read_with_the_meaning_the_guide_gives_them() -> None:
    result = parse(HAND / "834_codes_the_samples_never_use.txt")
    assert result.errors == []
    got = [(e.member_id, e.relationship, e.action, e.status, e.reason, e.coverage_line, e.tier, e.benefit_begin,
            e.benefit_end) for e in enrollments(result)]
    april, new_year, march_31 = date(2026, 4, 1), date(2026, 1, 1), date(2026, 3, 31)
    assert got == [
        ("M5001", "self", "add", "active", "initial_enrollment", "health", "FAM", april, None),
        ("M5002", "child", "add", "active", "initial_enrollment", "health", "FAM", april, None),  # 09 adopted
        ("M5003", "other", "add", "active", "initial_enrollment", "health", "FAM", april, None),  # 15 ward
        ("M5101", "self", "change", "active", "surviving_spouse", "health", "EMP", new_year, None),  # S, 026
        ("M5202", "child", "add", "active", "initial_enrollment", "dental", "CHD", april, None),  # 032 above
        ("M5301", "self", "add", "active", "initial_enrollment", "ltc", "EMP", april, None),  # HD03 LTC
        ("M5401", "self", "terminate", "active", "notification_only", "dental", "EMP", march_31, march_31),  # 002
    ]
    assert any("HD01=032" in n and "M5201" in n for n in result.notices)


def test_an_ins02_code_outside_the_code_list_is_an_error_naming_it(tmp_path: Path) -> None:
    result = parse(rewrite(tmp_path, FAMILY, ("INS*N*19*021", "INS*N*99*021")))
    assert [(e.line, e.element) for e in result.errors] == [(22, "INS02")]
    assert [e.member_id for e in enrollments(result)] == ["M000002", "M000003"]
