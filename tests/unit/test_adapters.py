"""File adapters: the real X12 samples (read in place), mutated copies, CSV, JSON lines, limits, SSNs."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from events import codec
from events.adapters import (
    AmountError,
    IngestLimits,
    MemberIds,
    ParsedFile,
    detect_format,
    parse_bytes,
    parse_path,
    to_cents,
)
from events.types import EnrollmentChanged, PaymentReceived, RemittanceReceived
from tests.fixtures import X12_SAMPLES
from tests.unit.builders import enroll, pay

SAMPLES = X12_SAMPLES
FAMILY = SAMPLES / "834_pyx12_deident_family.txt"
TERM = SAMPLES / "834_pyx12_deident_term.txt"
LIST_BILL = SAMPLES / "820_X218_list_bill_payment.edi"
REMITTANCE_ONLY = SAMPLES / "820_X218_list_bill_remittance_only.edi"
IDS = MemberIds(b"test-key")


def parse(path: Path, limits: IngestLimits | None = None) -> ParsedFile:
    return parse_path(path, IDS, limits)


def mutate(tmp_path: Path, source: Path, old: str, new: str, name: str = "mutated.x12") -> Path:
    text = source.read_text()
    assert text.count(old) == 1, f"{old!r} must occur once in {source.name}"
    target = tmp_path / name
    target.write_text(text.replace(old, new))
    return target


def ssn_free(result: ParsedFile, *ssns: str) -> None:
    blob = b"".join(codec.encode(e) for e in result.events) + json.dumps(
        [e.to_dict() for e in result.errors] + [d.to_dict() for d in result.discrepancies] + result.notices
    ).encode()
    for ssn in ssns:
        assert ssn.encode() not in blob


# -- the real samples -------------------------------------------------------------------------------


def test_family_834_gives_subscriber_spouse_and_child_on_the_subscribers_account() -> None:
    result = parse(FAMILY)
    assert (result.format, result.errors, result.discrepancies) == ("x12-834", [], [])
    assert all(isinstance(e, EnrollmentChanged) for e in result.events)
    got = [(e.account_id, e.member_id, e.relationship, e.action, e.coverage_line, e.plan, e.tier, e.status,
            e.benefit_begin, e.benefit_end, e.agency_id) for e in result.events if isinstance(e, EnrollmentChanged)]
    april = date(2026, 4, 1)
    assert got == [
        ("M000002", "M000002", "self", "add", "health", "PPO", "FAM", "active", april, None, "234567891"),
        ("M000002", "M000003", "spouse", "add", "health", "PPO", "FAM", "active", april, None, "234567891"),
        ("M000002", "M000004", "child", "add", "health", "PPO", "FAM", "active", april, None, "234567891"),
    ]
    assert [e.event_id for e in result.events] == [
        "834:WIDGETCORP:000000002:100002:0001:1:1", "834:WIDGETCORP:000000002:100002:0001:2:1",
        "834:WIDGETCORP:000000002:100002:0001:3:1",
    ]
    # (000000002 is also this file's ISA13 control number, which event ids carry)
    assert all("000000002" not in (e.account_id + e.member_id) for e in result.events
               if isinstance(e, EnrollmentChanged))
    ssn_free(result, "000000003", "000000004")


def test_term_834_terminates_two_subscribers_and_tefra_status_is_not_a_termination() -> None:
    result = parse(TERM)
    assert (result.format, result.errors) == ("x12-834", [])
    got = [(e.account_id, e.action, e.status, e.benefit_begin, e.benefit_end, e.tier, e.effective_on)
           for e in result.events if isinstance(e, EnrollmentChanged)]
    end = date(2026, 3, 31)
    assert got == [
        ("M000010", "terminate", "active", date(2021, 1, 1), end, "EMP", end),
        ("M000011", "terminate", "active", date(2021, 6, 1), end, "EMP", end),
    ]


def test_a_834_retiree_terminated_by_death_carries_status_retiree_and_reason_death(tmp_path: Path) -> None:
    # INS04=03 (death), INS05=A, INS08=RT (retired) on the first subscriber of the real term file.
    text = TERM.read_text().replace("INS*Y*18*024*XN*T*C**FT~", "INS*Y*18*024*03*A*C**RT~", 1)
    path = tmp_path / "death.x12"
    path.write_text(text)
    result = parse(path)
    assert result.errors == []
    got = [(e.account_id, e.status, e.reason) for e in result.events if isinstance(e, EnrollmentChanged)]
    assert got == [("M000010", "retiree", "death"), ("M000011", "active", "notification_only")]  # INS04 XN


def test_list_bill_820_gives_six_payments_and_a_balanced_remittance() -> None:
    result = parse(LIST_BILL)
    assert (result.format, result.errors, result.discrepancies) == ("x12-820", [], [])
    payments = [e for e in result.events if isinstance(e, PaymentReceived)]
    assert [(p.account_id, p.amount_cents) for p in payments] == [
        ("777222", 3000), ("777222", 3500), ("777333", 4500), ("777444", 5000), ("777111", 4500),
        ("777111", 5000)]
    assert {(p.payer_id, p.trace_number, p.remittance_id, p.method, p.effective_on) for p in payments} == {
        ("123456789", "78905", "78905", "ach", date(2007, 11, 3))}
    assert [p.event_id for p in payments] == [f"820:123456789:78905:{n}" for n in range(1, 7)]
    [remit] = [e for e in result.events if isinstance(e, RemittanceReceived)]
    assert (remit.account_id, remit.total_cents, remit.lines_total_cents, remit.line_count, remit.payee_id) == (
        "payer:123456789", 25_500, 25_500, 6, "012222222")
    ssn_free(result, "030440099", "029500563", "029480664", "030498099")


def test_remittance_only_820_balances_lines_with_their_adjustments() -> None:
    result = parse(REMITTANCE_ONLY)
    assert (result.format, result.errors, result.discrepancies) == ("x12-820", [], [])
    payments = [e for e in result.events if isinstance(e, PaymentReceived)]
    assert [(p.account_id, p.amount_cents) for p in payments] == [
        ("123456", 700_000), ("793016", 1_000_000), ("934213", 300_000)]
    [remit] = [e for e in result.events if isinstance(e, RemittanceReceived)]
    assert (remit.total_cents, remit.lines_total_cents) == (2_000_000, 2_000_000)
    # each payment carries what was billed (RMR05) and its adjustments (ADX01, ADX02), and they add up
    assert [(p.billed_cents, [(a.amount_cents, a.reason) for a in p.adjustments]) for p in payments] == [
        (None, []), (1_100_000, [(-100_000, "52")]), (310_000, [(-10_000, "52")])]
    for p in payments[1:]:
        assert p.billed_cents is not None
        assert p.amount_cents == p.billed_cents + sum(a.amount_cents for a in p.adjustments)
    ssn_free(result, "190206123", "163910163", "179203456")


def test_parsing_the_same_file_twice_gives_the_same_events() -> None:
    for sample in (FAMILY, TERM, LIST_BILL, REMITTANCE_ONLY):
        assert [codec.encode(e) for e in parse(sample).events] == [codec.encode(e) for e in parse(sample).events]


def test_samples_are_read_in_place_and_left_untouched() -> None:
    before = {p: p.read_bytes() for p in (FAMILY, TERM, LIST_BILL, REMITTANCE_ONLY)}
    for p in before:
        parse(p)
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(x.name for x in SAMPLES.iterdir() if x.is_file()) == sorted(
        [*(p.name for p in before), "README.md", "SHA256SUMS"])


# -- mutated copies ---------------------------------------------------------------------------------


def test_a_wrong_se_count_is_reported_on_the_se_segment(tmp_path: Path) -> None:
    result = parse(mutate(tmp_path, FAMILY, "SE*25*0001", "SE*26*0001"))
    [error] = result.errors
    assert (error.line, error.segment_id, error.element) == (27, "SE", "SE01")
    assert "26" in error.reason and "25" in error.reason
    assert len(result.events) == 3, "the members themselves are valid"


def test_a_bad_maintenance_code_rejects_that_member_only(tmp_path: Path) -> None:
    result = parse(mutate(tmp_path, FAMILY, "INS*N*19*021", "INS*N*19*099"))
    [error] = result.errors
    assert (error.line, error.segment_id, error.loop, error.element) == (22, "INS", "2000", "INS03")
    assert "099" in error.reason
    assert [e.member_id for e in result.events if isinstance(e, EnrollmentChanged)] == ["M000002", "M000003"]
    assert error.text().startswith(f"{tmp_path / 'mutated.x12'}:22: segment INS")


def test_an_unknown_insurance_line_is_rejected_naming_hd03(tmp_path: Path) -> None:
    result = parse(mutate(tmp_path, TERM, "HD*024**PPO**EMP~\nDTP*349*D8*20260331~\nINS*Y*18*024*XN*T*C**FT~\n",
                          "HD*024**XYZ**EMP~\nDTP*349*D8*20260331~\nINS*Y*18*024*XN*T*C**FT~\n"))
    assert [(e.segment_id, e.element) for e in result.errors] == [("HD", "HD03")]
    assert [e.account_id for e in result.events] == ["M000011"]


def test_long_term_care_hd03_ltc_is_a_line_of_its_own(tmp_path: Path) -> None:
    result = parse(mutate(tmp_path, TERM, "HD*024**PPO**EMP~\nDTP*349*D8*20260331~\nINS*Y*18*024*XN*T*C**FT~\n",
                          "HD*024**LTC**EMP~\nDTP*349*D8*20260331~\nINS*Y*18*024*XN*T*C**FT~\n"))
    assert result.errors == []
    assert [(e.account_id, e.coverage_line, e.plan) for e in result.events if isinstance(e, EnrollmentChanged)] == [
        ("M000010", "ltc", "LTC"), ("M000011", "health", "PPO")]


def test_a_non_numeric_amount_is_an_error_and_the_remittance_no_longer_balances(tmp_path: Path) -> None:
    result = parse(mutate(tmp_path, LIST_BILL, "RMR*IG*555777**45", "RMR*IG*555777**4X5"))
    [error] = result.errors
    assert (error.line, error.segment_id, error.loop, error.element) == (15, "RMR", "2300B", "RMR04")
    assert len([e for e in result.events if isinstance(e, PaymentReceived)]) == 5
    [disc] = result.discrepancies
    assert (disc.kind, disc.expected_cents, disc.actual_cents, disc.segment_id) == (
        "remittance_total_mismatch", 21_000, 25_500, "BPR")


def test_an_imbalanced_820_is_ingested_and_reported_with_the_numbers(tmp_path: Path) -> None:
    result = parse(mutate(tmp_path, LIST_BILL, "BPR*C*255*", "BPR*C*260.5*"))
    assert result.errors == []
    [disc] = result.discrepancies
    assert (disc.kind, disc.expected_cents, disc.actual_cents, disc.line, disc.remittance_id) == (
        "remittance_total_mismatch", 25_500, 26_050, 4, "78905")
    [remit] = [e for e in result.events if isinstance(e, RemittanceReceived)]
    assert (remit.total_cents, remit.lines_total_cents) == (26_050, 25_500)
    assert len(result.events) == 7


def test_a_line_that_does_not_equal_billed_plus_adjustments_is_reported(tmp_path: Path) -> None:
    result = parse(mutate(tmp_path, REMITTANCE_ONLY, "ADX*-100*52", "ADX*-50*52"))
    [disc] = result.discrepancies
    assert (disc.expected_cents, disc.actual_cents, disc.remittance_line, disc.segment_id) == (
        305_000, 300_000, 3, "RMR")


def test_a_fraction_of_a_cent_is_rejected(tmp_path: Path) -> None:
    result = parse(mutate(tmp_path, LIST_BILL, "RMR*IG*544477**50", "RMR*IG*544477**50.001"))
    [error] = result.errors
    assert (error.element, error.line) == ("RMR04", 18)
    assert "fraction of a cent" in error.reason


def test_a_resubmission_is_recognised(tmp_path: Path) -> None:
    result = parse(mutate(tmp_path, FAMILY, "BGN*00*20260401-002*20260401*0900****2",
                          "BGN*15*20260402-001*20260402*0900**20260401-002**2"))
    assert result.errors == []
    assert any("resubmission" in n and "20260401-002" in n for n in result.notices)


def ssn_family(tmp_path: Path) -> Path:
    """The family file with SSNs (distinctive ones) as member ids, and as the subscriber id in REF*0F."""
    text = FAMILY.read_text()
    for old, new in (("REF*0F*M000002~", "REF*0F*518274963~"), ("REF*0F*M000003~", "REF*0F*518274963~"),
                     ("34*000000002", "34*518274963"), ("34*000000003", "34*518274964"),
                     ("34*000000004", "34*518274965")):
        assert text.count(old) == 1
        text = text.replace(old, new)
    path = tmp_path / "ssn.x12"
    path.write_text(text)
    return path


def test_ssn_member_ids_are_replaced_by_a_keyed_hash(tmp_path: Path) -> None:
    result = parse(ssn_family(tmp_path))
    assert result.errors == []
    accounts = {e.account_id for e in result.events}
    members = [e.member_id for e in result.events if isinstance(e, EnrollmentChanged)]
    expected = IDS.pseudonym("518274963")
    assert accounts == {expected} and expected.startswith("ssn-")
    assert members == [expected, IDS.pseudonym("518274964"), "M000004"]
    assert MemberIds(b"other-key").pseudonym("518274963") != expected
    assert MemberIds(b"k", known={"518274963": "M-KNOWN"}).pseudonym("518-27-4963") == "M-KNOWN"
    ssn_free(result, "518274963", "518274964", "518274965")


def test_an_error_quoting_an_ssn_is_redacted(tmp_path: Path) -> None:
    path = ssn_family(tmp_path)
    path.write_text(path.read_text().replace("INS*Y*18*021*XN", "INS*Y*18*021*518274963"))
    result = parse(path)
    quoted = [e for e in result.errors if e.element == "INS04"]
    assert quoted and all("[redacted]" in e.reason and e.line == 7 for e in quoted)
    assert {e.line for e in result.errors if e.element == "INS01"} == {17, 22}, "its dependents cannot be placed"
    ssn_free(result, "518274963")


def test_event_ids_follow_the_control_numbers(tmp_path: Path) -> None:
    other = parse(mutate(tmp_path, FAMILY, "*000000002*0*T*:", "*000000009*0*T*:"))
    assert [e.event_id.split(":")[2] for e in other.events] == ["000000009"] * 3
    moved = parse(mutate(tmp_path, LIST_BILL, "*000010216*0*T*:", "*000099999*0*T*:", name="b.x12"))
    assert [e.event_id for e in moved.events] == [e.event_id for e in parse(LIST_BILL).events], \
        "payments are identified by payer, trace and line"


# -- amounts, formats, CSV, JSON lines, limits ------------------------------------------------------


def test_amounts_become_exact_integer_cents() -> None:
    assert [to_cents(s) for s in ("255", "0.1", "-10.5", "78412.00", "1e2")] == [25_500, 10, -1_050, 7_841_200, 10_000]
    for bad in ("1.005", "abc", "", "NaN", "inf"):
        with pytest.raises(AmountError):
            to_cents(bad)


def test_formats_are_recognised_by_content_not_name() -> None:
    assert detect_format(FAMILY.read_bytes()) == "x12-834"
    assert detect_format(LIST_BILL.read_bytes()) == "x12-820"
    assert detect_format(codec.encode(pay(100)) + b"\n") == "jsonl"
    assert detect_format(b"event_id,account_id\n") == "csv"
    assert detect_format(b"hello world") is None
    unknown = parse_bytes(b"hello", "x.txt", IDS)
    assert unknown.format == "unknown" and "not a recognised format" in unknown.errors[0].reason


PAYMENT_HEADER = ("event_id,account_id,effective_on,occurred_at,payment_id,coverage_month,amount_cents,method,"
                  "payer_id,trace_number")


def test_csv_rows_become_events_and_bad_cells_name_row_and_column() -> None:
    text = "\n".join([
        PAYMENT_HEADER,
        "p-1,M1,2026-01-05,2026-01-05T10:00:00Z,P1,2026-01-01,78412,ach,AG-1,T1",
        "p-2,M2,2026-01-05,2026-01-05T10:00:00Z,P2,,12.50,ach,AG-1,T1",
        "p-3,M3,2026-01-05,2026-01-05T10:00:00Z,P3,2026-01-01,100,cash,AG-1,",
        "p-4,M4,2026-01-05,2026-01-05T10:00:00Z,P4,2026-01-15,100,ach,AG-1,",
        "p-5,M5,2026-01-05,2026-01-05T10:00:00Z,P5,,100,check,AG-1,",
    ]) + "\n"
    result = parse_bytes(text.encode(), "pay.csv", IDS)
    assert result.format == "csv"
    assert [e.event_id for e in result.events] == ["p-1", "p-5"]
    first = result.events[0]
    assert isinstance(first, PaymentReceived) and first.amount_cents == 78_412 and first.trace_number == "T1"
    assert [(e.line, e.element) for e in result.errors] == [
        (3, "amount_cents"), (4, "method"), (5, "coverage_month")]
    assert "whole number of cents" in result.errors[0].reason


def test_csv_with_a_type_column_and_an_unknown_header() -> None:
    row = enroll(event_id="e-1")
    text = ("type,event_id,account_id,effective_on,occurred_at,member_id,plan,coverage_line,tier,action,"
            "benefit_begin,agency_id\n"
            f"enrollment_changed,e-1,{row.account_id},2026-01-01,2026-01-01T09:00:00Z,{row.member_id},"
            f"{row.plan},health,EMP,add,2026-01-01,{row.agency_id}\n")
    result = parse_bytes(text.encode(), "e.csv", IDS)
    assert result.errors == [] and result.events == [row]
    odd = parse_bytes(b"event_id,colour\n1,red\n", "x.csv", IDS)
    assert odd.events == [] and odd.errors[0].element == "header"


def test_json_lines_errors_name_line_and_field() -> None:
    good = codec.encode(pay(100, event_id="j-1"))
    bad = codec.encode(pay(100, event_id="j-2")).replace(b'"amount_cents":100', b'"amount_cents":0')
    result = parse_bytes(good + b"\n\n" + bad + b"\n", "e.jsonl", IDS)
    assert [e.event_id for e in result.events] == ["j-1"]
    [error] = result.errors
    assert (error.line, error.element) == (3, "amount_cents")


def test_limits_are_enforced_with_errors_naming_the_setting(tmp_path: Path) -> None:
    data = FAMILY.read_bytes()
    big = parse_bytes(data, "f", IDS, IngestLimits(max_file_bytes=100))
    assert big.events == [] and "ingest_max_file_bytes" in big.errors[0].reason
    long = parse_bytes(data, "f", IDS, IngestLimits(max_line_bytes=50))
    assert long.events == [] and "ingest_max_line_bytes" in long.errors[0].reason
    many = parse_bytes(data, "f", IDS, IngestLimits(max_members=2))
    assert many.events == [] and "ingest_max_members_per_file" in many.errors[-1].reason
    assert many.errors[-1].line == 22, "the third INS"
    rows = parse_bytes(codec.encode(pay(1)) + b"\n" + codec.encode(pay(2)) + b"\n", "j", IDS,
                       IngestLimits(max_members=1))
    assert rows.events == [] and rows.errors[0].line == 2
    limit = len(codec.encode(pay(1))) + 10
    lines = parse_bytes(codec.encode(pay(1)) + b"\n" + b"{" + b" " * limit + b"}\n", "j", IDS,
                        IngestLimits(max_line_bytes=limit))
    assert len(lines.events) == 1 and "ingest_max_line_bytes" in lines.errors[0].reason


def test_dtm_582_gives_the_coverage_month_of_its_line(tmp_path: Path) -> None:
    path = mutate(tmp_path, LIST_BILL, "RMR*IG*555777**45~", "RMR*IG*555777**45~DTM*582****RD8*20260315-20260331~")
    path.write_text(path.read_text().replace("SE*21*0001", "SE*22*0001"))
    result = parse(path)
    assert result.errors == []
    months = {e.payment_id: e.coverage_month for e in result.events if isinstance(e, PaymentReceived)}
    assert months["78905-3"] == date(2026, 3, 1)
    assert {m for k, m in months.items() if k != "78905-3"} == {None}


def test_csv_and_json_lines_events_are_the_codecs_own(tmp_path: Path) -> None:
    event = pay(78_412, event_id="rt-1", trace="T9", remittance="R9")
    row = codec.to_builtins(event)
    # CSV has a column per scalar field; lists (a remittance line's adjustments) come only from X12
    header = [k for k in row if k not in ("type", "schema_version") and row[k] is not None
              and not isinstance(row[k], list | tuple)]
    text = ",".join(header) + "\n" + ",".join(str(row[k]) for k in header) + "\n"
    assert parse_bytes(text.encode(), "p.csv", IDS).events == [event]
    assert parse_bytes(codec.encode(event) + b"\n", "p.jsonl", IDS).events == [event]


# -- audit 834s compared with the ledger ------------------------------------------------------------


def audit_file(tmp_path: Path, tier: str = "FAM") -> Path:
    path = mutate(tmp_path, FAMILY, "****2~", "****4~", name="audit.x12")
    text = path.read_text()
    for old, new in (("INS*Y*18*021", "INS*Y*18*030"), ("INS*N*01*021", "INS*N*01*030"),
                     ("INS*N*19*021", "INS*N*19*030"), ("HD*021**PPO**FAM", f"HD*030**PPO**{tier}")):
        text = text.replace(old, new)
    path.write_text(text)
    return path


def test_an_audit_834_publishes_only_what_differs_from_the_ledger(tmp_path: Path) -> None:
    from events.adapters.audit import compare_audit
    from projections.model import CoverageRow

    parsed = parse(audit_file(tmp_path))
    assert parsed.errors == [] and len(parsed.audit_ids) == 3
    assert any("full-file audit" in n for n in parsed.notices)

    def row(member: str, tier: str = "FAM", line: str = "health", end: date | None = None) -> CoverageRow:
        return CoverageRow(account_id="M000002", member_id=member, relationship="self", coverage_line=line,
                           plan="PPO", tier=tier, status="active", begin_on=date(2026, 4, 1), end_on=end,
                           agency_id="234567891", event_id="e")

    ledger = {"M000002": [row("M000002"), row("M000003", tier="ESP"), row("M000009", line="dental"),
                          row("M000008", end=date(2026, 3, 31))]}
    compared = compare_audit(parsed, ledger)
    published = [(e.member_id, e.action) for e in compared.events if isinstance(e, EnrollmentChanged)]
    assert published == [("M000003", "change"), ("M000004", "add")], "the subscriber's terms are unchanged"
    assert [(a["member_id"], a["difference"]) for a in compared.audit] == [
        ("M000003", "differs"), ("M000004", "missing_in_ledger"), ("M000009", "missing_in_file")]
    assert compared.audit[0]["ledger"]["tier"] == "ESP" and compared.audit[0]["file"]["tier"] == "FAM"
    assert compared.audit[2]["published"] is None, "never terminated blindly"
    assert compare_audit(parse(FAMILY), ledger).events == parse(FAMILY).events, "not an audit: untouched"


def test_a_full_file_audit_reports_ledger_members_the_file_leaves_out(tmp_path: Path) -> None:
    from events.adapters.ingest import ingest
    from processor.settings import Settings
    from projections.model import CoverageRow

    def row(account: str, member: str) -> CoverageRow:
        return CoverageRow(account_id=account, member_id=member, relationship="self", coverage_line="health",
                           plan="PPO", tier="FAM", status="active", begin_on=date(2026, 4, 1), end_on=None,
                           agency_id="234567891", event_id="e")

    ledger_rows = {"M000002": [row("M000002", "M000002")], "M000777": [row("M000777", "M000777")]}
    asked: list[list[str]] = []

    def agency_accounts(agencies: list[str]) -> list[str]:
        asked.append(agencies)
        return ["M000777"]  # a member of the same sponsor the whole-enrollment file does not mention

    report = ingest([str(audit_file(tmp_path))], Settings(data_dir=tmp_path), dry_run=True,
                    ledger=lambda accounts: {a: ledger_rows.get(a, []) for a in accounts},
                    agency_accounts=agency_accounts)
    [parsed] = report.files
    assert parsed.full_file and asked and asked[0]
    left_out = [a for a in parsed.audit if a["account_id"] == "M000777"]
    assert [(a["member_id"], a["difference"], a["published"]) for a in left_out] == [
        ("M000777", "missing_in_file", None)], "reported, never terminated blindly"
