"""Acknowledgments back to the sender (``ingest --ack``): each 999 is read back with pyx12 and checked
against the errors ingest reported; a TA1 for envelope errors."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from itertools import count
from pathlib import Path
from typing import Any

import pytest
import pyx12.x12file

from events.adapters import MemberIds, ParsedFile, parse_bytes
from events.adapters.ack import Acknowledgment, acknowledgments
from events.adapters.ingest import ControlNumbers, write_acknowledgments
from events.adapters.x12 import read_x12
from tests.fixtures import X12_SAMPLES

HAND = X12_SAMPLES / "handwritten"
FAMILY = X12_SAMPLES / "834_pyx12_deident_family.txt"
LIST_BILL = X12_SAMPLES / "820_X218_list_bill_payment.edi"
IDS = MemberIds(b"test-key")
NOW = datetime(2026, 3, 6, 8, 30, tzinfo=UTC)


def acks(text: str, *, withheld: bool = False) -> tuple[ParsedFile, list[Acknowledgment]]:
    parsed = parse_bytes(text.encode(), "in.x12", IDS)
    numbers = count(1)
    return parsed, acknowledgments(text, parsed, now=NOW, next_control=lambda: next(numbers), withheld=withheld)


def segments(text: str) -> list[list[str]]:
    """The acknowledgment tokenized by pyx12 (its reader, which also checks the envelope counts)."""
    reader = pyx12.x12file.X12Reader(io.StringIO(text))
    out = [[seg.get_seg_id(), *(e.format() for e in seg.elements)] for seg in reader]
    assert reader.pop_errors() == []
    return out


def read_999(ack: Acknowledgment) -> dict[str, dict[str, Any]]:
    """The transaction sets a 999 acknowledges: {ST02: {"ik5": [...], "ik3": [(id, pos, code)], "ik4": [...]}},
    after pyx12 has validated the 999 against 005010X231A1 with no error."""
    assert ack.kind == "999"
    _segs, errors = read_x12(ack.text, "ack.999")
    assert errors == [], [e.text() for e in errors]
    sets: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] = {}
    for seg in segments(ack.text):
        if seg[0] == "AK2":
            current = sets.setdefault(seg[2], {"ik5": [], "ik3": [], "ik4": []})
        elif seg[0] == "IK3":
            current["ik3"].append((seg[1], int(seg[2]), seg[4]))
        elif seg[0] == "IK4":
            current["ik4"].append((int(seg[1]), seg[3]))
        elif seg[0] == "IK5":
            current["ik5"] = seg[1:]
        elif seg[0] == "AK9":
            sets["AK9"] = {"ak9": seg[1:]}
    return sets


def test_a_clean_file_is_acknowledged_accepted_and_pyx12_reads_the_999_without_an_error() -> None:
    _parsed, written = acks(LIST_BILL.read_text())
    [ack] = written
    assert ack.interchange == "000010216"
    sets = read_999(ack)
    assert sets["0001"]["ik5"] == ["A"]
    assert sets["AK9"]["ak9"] == ["A", "1", "1", "1"]
    isa = segments(ack.text)[0]
    # our envelope back: sender and receiver swapped, our own control number
    assert (isa[6].strip(), isa[8].strip(), isa[13]) == ("123456789012346", "123456789012345", "000000001")


def test_the_999_lists_every_reported_error_of_a_transaction_set_accepted_with_errors() -> None:
    text = LIST_BILL.read_text().replace("RMR*IG*555777**45", "RMR*IG*555777**4X5").replace(
        "SE*21*0001", "SE*22*0001")
    parsed, [ack] = acks(text)
    sets = read_999(ack)
    one = sets["0001"]
    assert one["ik5"] == ["E", "4", "5"], "E: five lines were published; 4: SE01 count; 5: a segment in error"
    segment_errors = [e for e in parsed.errors if e.segment_id not in ("ST", "SE")]
    assert {(e.segment_id, e.segment) for e in segment_errors} == {(s, p) for s, p, _ in one["ik3"]}
    assert one["ik3"] == [("RMR", 13, "8")]
    assert one["ik4"] == [(4, "6")], "RMR04, invalid character"


def test_a_mapping_error_is_in_the_999_with_its_element_and_the_other_members_are_accepted() -> None:
    parsed, [ack] = acks(FAMILY.read_text().replace("INS*N*19*021", "INS*N*19*099"))
    [error] = parsed.errors
    sets = read_999(ack)
    assert sets["0001"]["ik5"] == ["E", "5"]
    assert sets["0001"]["ik3"] == [("INS", error.segment, "8")]
    assert sets["0001"]["ik4"] == [(3, "7")], "INS03, invalid code value"


def test_a_transaction_set_that_gave_no_event_is_rejected_and_the_group_partly_accepted(tmp_path: Path) -> None:
    text = (HAND / "820_two_transaction_sets_crlf.edi").read_bytes().decode()
    # the second remittance loses its payer (N1*PR): nothing of it is ingested
    bad = text.replace("N1*PR*STATE AGENCY 5*FI*AG0000005~\r\n", "").replace("SE*10*0002", "SE*9*0002")
    _parsed, [ack] = acks(bad)
    sets = read_999(ack)
    assert (sets["0001"]["ik5"], sets["0002"]["ik5"][0]) == (["A"], "R")
    assert sets["AK9"]["ak9"] == ["P", "2", "2", "1"]


def test_a_cut_short_file_is_rejected_in_its_999_and_its_envelope_in_a_ta1() -> None:
    data = LIST_BILL.read_text()
    _parsed, written = acks(data[:data.index("ENT*3")])
    assert [a.kind for a in written] == ["999", "TA1"]
    sets = read_999(written[0])
    assert sets["0001"]["ik5"][0] == "R" and "2" in sets["0001"]["ik5"], "2: transaction set trailer missing"
    assert sets["AK9"]["ak9"][0] == "R" and "3" in sets["AK9"]["ak9"][4:], "3: functional group trailer missing"
    ta1 = segments(written[1].text)
    assert [s[0] for s in ta1] == ["ISA", "TA1", "IEA"]
    assert ta1[1][1:] == ["000010216", "080503", "1705", "R", "023"], "023: premature end of file"
    assert ta1[2][1] == "0", "a TA1 alone: no functional group"


def test_an_envelope_error_gets_a_ta1_naming_it_and_the_content_is_still_acknowledged() -> None:
    text = LIST_BILL.read_text().replace("IEA*1*000010216", "IEA*1*000010217")
    parsed, written = acks(text)
    assert [a.kind for a in written] == ["999", "TA1"]
    assert read_999(written[0])["0001"]["ik5"] == ["A"]
    assert segments(written[1].text)[1][4:] == ["E", "001"], "001: ISA13 and IEA02 do not match"
    assert any(e.segment_id == "IEA" for e in parsed.errors)


def test_a_ta1_is_written_when_the_sender_asks_for_one() -> None:
    text = LIST_BILL.read_text().replace("*000010216*0*T*:", "*000010216*1*T*:")
    _parsed, written = acks(text)
    assert [a.kind for a in written] == ["999", "TA1"]
    assert segments(written[1].text)[1][4:] == ["A", "000"]


def test_every_interchange_of_a_file_gets_its_own_999() -> None:
    _parsed, written = acks((HAND / "834_two_interchanges.txt").read_text())
    assert [(a.kind, a.interchange) for a in written] == [("999", "000004008"), ("999", "000005008")]
    controls = [segments(a.text)[0][13] for a in written]
    assert controls == ["000000001", "000000002"]
    for a in written:
        assert read_999(a)["0001"]["ik5"] == ["A"]


def test_a_transaction_set_of_a_type_ingest_does_not_read_is_rejected_as_not_supported() -> None:
    text = (HAND / "820_two_transaction_sets_crlf.edi").read_text().replace("ST*820*0002", "ST*835*0002")
    parsed, written = acks(text)
    assert any(e.element == "ST01" and "not one ingest reads" in e.reason for e in parsed.errors)
    sets = read_999(written[0])
    assert sets["0001"]["ik5"] == ["A"]
    assert sets["0002"]["ik5"][0] == "R" and "1" in sets["0002"]["ik5"], "1: transaction set not supported"


def test_strict_withheld_files_are_acknowledged_as_rejected() -> None:
    _parsed, [ack] = acks(LIST_BILL.read_text(), withheld=True)
    sets = read_999(ack)
    assert sets["0001"]["ik5"] == ["R"], "no error of its own, but nothing of it was published"
    assert sets["AK9"]["ak9"] == ["R", "1", "1", "0"]


def test_acknowledgment_files_are_named_by_file_and_interchange_and_control_numbers_never_repeat(
        tmp_path: Path) -> None:
    parsed = [parse_bytes(p.read_bytes(), str(p), IDS) for p in (LIST_BILL, HAND / "834_two_interchanges.txt")]
    first = write_acknowledgments(parsed, tmp_path / "acks", NOW)
    assert [Path(p).name for p in first] == [
        "820_X218_list_bill_payment.edi.000010216.999", "834_two_interchanges.txt.000004008.999",
        "834_two_interchanges.txt.000005008.999"]
    again = write_acknowledgments(parsed[:1], tmp_path / "acks", NOW)
    assert segments(Path(again[0]).read_text())[0][13] == "000000004", "the next number after the three used"
    with ControlNumbers(tmp_path / "acks") as numbers:
        assert numbers.next() == 5


@pytest.mark.parametrize("name", sorted(p.name for p in HAND.iterdir() if p.suffix in (".edi", ".txt")))
def test_every_hand_written_file_is_acknowledged_accepted(name: str) -> None:
    _parsed, written = acks((HAND / name).read_text())
    assert written and {a.kind for a in written} == {"999"}
    for a in written:
        sets = read_999(a)
        assert [v["ik5"] for k, v in sets.items() if k != "AK9"] == [["A"]] * (len(sets) - 1)
