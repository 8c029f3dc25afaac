"""Property: ingest never loses a member, a coverage or a payment line silently.

The repository's X12 files (the four samples and the hand-written ones) are mutated the way senders
get them wrong or merely different: a code changed, a situational element left out, a segment
dropped, other separators, line breaks. For every INS (member), HD (coverage) and RMR (payment line)
of the mutated file there must be an event for it, or an error located in it, or an error of its
transaction set or envelope that stopped that whole transaction set, or a notice naming its line
(HD01 032). A missing tier is an event too, marked in ``missing_elements``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events import codec
from events.adapters import MemberIds, ParsedFile, parse_bytes
from events.adapters.x12 import ISA_LENGTH, split_interchanges
from events.types import EnrollmentChanged, PaymentReceived
from tests.fixtures import X12_SAMPLES

FILES = sorted([*X12_SAMPLES.glob("*.txt"), *X12_SAMPLES.glob("*.edi"), *(X12_SAMPLES / "handwritten").glob("*.edi"),
                *(X12_SAMPLES / "handwritten").glob("*.txt")])
TEXTS = [p.read_bytes().decode() for p in FILES]
IDS = MemberIds(b"property-key")
ENVELOPE = ("ISA", "GS", "ST", "SE", "GE", "IEA")
# values senders put in elements: valid codes of other code lists, invalid ones, empty, odd amounts/dates
VALUES = ["", "X", "001", "002", "021", "024", "025", "026", "030", "032", "01", "09", "15", "17", "18", "19", "53",
          "99", "A", "C", "S", "T", "Y", "N", "HLT", "DEN", "LTC", "ZZZ", "EMP", "FAM", "NON", "ACH", "I", "U", "P",
          "D", "0", "-5", "12.345", "1E3", "99999999999", "20260230", "20260101-20251231", "RD8", "D8", "582", "AAG",
          "IG", "AZ", "B7", "CT", "34", "EI", "52", "H6"]


@dataclass
class Unit:
    kind: str  # INS, HD or RMR
    line: int
    last: int  # the last line of its loop
    st_line: int
    key: tuple[str, ...]  # what its events are recognised by


@dataclass
class Structure:
    units: list[Unit] = field(default_factory=list)
    sets: dict[int, tuple[int, int]] = field(default_factory=dict)  # ST line -> (first, last) line


def structure(text: str) -> Structure:
    """INS, HD and RMR of a file with the lines their loops span, read without pyx12 (independently)."""
    out = Structure()
    for chunk in split_interchanges(text):
        head = chunk.head
        if len(head) < ISA_LENGTH or not head.startswith("ISA"):
            continue
        ele, seg_term = head[3], head[-1]
        segs = [s.strip("\r\n\t ").split(ele) for s in chunk.source[chunk.start:chunk.end].split(seg_term)]
        segs = [s for s in segs if s != [""]]
        isa13 = segs[0][13] if len(segs[0]) > 13 else ""
        gs06, st_line = "", 0
        st02 = trace = ""
        ordinal = hd_number = rmr_number = 0
        for i, els in enumerate(segs):
            line = chunk.offset + i + 1
            seg_id = els[0]
            for unit in out.units:
                if unit.last == -1 and (seg_id in ("INS", "SE", "ST") or (unit.kind in ("HD", "RMR") and seg_id in (
                        unit.kind, "ENT", "INS"))):
                    unit.last = line - 1
            if seg_id == "GS":
                gs06 = els[6] if len(els) > 6 else ""
            elif seg_id == "ST":
                st_line, st02, ordinal, rmr_number, trace = line, els[2] if len(els) > 2 else "", 0, 0, ""
                out.sets[st_line] = (line, chunk.offset + len(segs))
            elif seg_id == "SE" and st_line:
                out.sets[st_line] = (st_line, line)
            elif seg_id == "TRN":
                trace = els[2] if len(els) > 2 else ""
            elif seg_id == "INS":
                ordinal += 1
                hd_number = 0
                out.units.append(Unit("INS", line, -1, st_line, (isa13, gs06, st02, str(ordinal))))
            elif seg_id == "HD" and ordinal:
                hd_number += 1
                out.units.append(Unit("HD", line, -1, st_line, (isa13, gs06, st02, str(ordinal),
                                                                str(hd_number))))
            elif seg_id == "RMR":
                rmr_number += 1
                out.units.append(Unit("RMR", line, -1, st_line, (trace, str(rmr_number))))
        for unit in out.units:
            if unit.last == -1:
                unit.last = chunk.offset + len(segs)
    return out


def _has_event(unit: Unit, result: ParsedFile) -> bool:
    for e in result.events:
        if unit.kind in ("INS", "HD") and isinstance(e, EnrollmentChanged):
            parts = e.event_id.split(":")
            if unit.kind == "INS" and tuple(parts[2:6]) == unit.key:
                return True
            if unit.kind == "HD" and tuple(parts[2:7]) == unit.key:
                return True
        if unit.kind == "RMR" and isinstance(e, PaymentReceived):
            trace, number = unit.key
            if e.trace_number == trace and e.payment_id.startswith(f"{trace}-{number}") and (
                    e.payment_id[len(trace) + 1 + len(number):][:1] in ("", "-")):
                return True
    return False


def _explained(unit: Unit, result: ParsedFile, sets: dict[int, tuple[int, int]]) -> bool:
    if _has_event(unit, result):
        return True
    if any(e.line is not None and unit.line <= e.line <= unit.last for e in result.errors):
        return True
    if any(f":{unit.line}:" in n and "032" in n for n in result.notices):
        return True
    if unit.kind == "INS":  # a member every coverage loop of which is accounted for (HD01 032: not covered)
        loops = [u for u in structure_cache[id(result)].units if u.kind == "HD" and unit.line < u.line <= unit.last]
        if loops and all(_explained(u, result, sets) for u in loops):
            return True
    if unit.kind == "HD":  # a coverage of a member with an error, or whose member was dropped as a whole
        member = next((u for u in structure_cache[id(result)].units if u.kind == "INS" and u.line < unit.line <=
                       u.last), None)
        if member is not None and any(e.line is not None and member.line <= e.line <= member.last
                                      for e in result.errors):
            return True
    # the whole transaction set was not mapped (or mapped to nothing) and an error says why
    first, last = sets.get(unit.st_line, (unit.st_line, unit.st_line))
    whole = not result.accepted.get(unit.st_line)
    if whole and any(e.line is None or first <= e.line <= last or e.segment_id in ENVELOPE
                     for e in result.errors):
        return True
    return any(e.line is None or "nothing of the file" in e.reason or "stopped after" in e.reason
               or "not a recognised format" in e.reason for e in result.errors)


structure_cache: dict[int, Structure] = {}


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = TEXTS[draw(st.integers(0, len(TEXTS) - 1))]
    kind = draw(st.sampled_from(["value", "value", "value", "drop", "separators", "crlf"]))
    chunks = split_interchanges(text)
    head = chunks[0].head
    ele, seg_term = head[3], head[-1]
    if kind == "separators":
        new_ele, new_term = draw(st.sampled_from([("|", "!"), ("^", "\n"), ("+", "'"), ("*", "\n")]))
        if new_ele == head[82] or new_ele == head[104]:  # keep clear of the repetition and component separators
            new_ele = "|"
        return text.replace(ele, "\x00").replace(seg_term, "\x01").replace("\x00", new_ele).replace(
            "\x01", new_term).replace("\n\n", "\n")
    if kind == "crlf":
        return "".join(s.strip("\r\n") + seg_term + "\r\n" for s in text.split(seg_term) if s.strip("\r\n"))
    segs = text.split(seg_term)
    body = [i for i, s in enumerate(segs) if s.strip("\r\n").split(ele)[0] not in (*ENVELOPE, "")]
    at = draw(st.sampled_from(body))
    els = segs[at].split(ele)
    if kind == "drop":
        if els[0].strip("\r\n") in ("INS", "ENT", "RMR", "HD", "BPR", "TRN", "N1"):
            return text  # the unit itself gone is not a loss, and a header gone is covered by "value"
        segs[at] = segs[at][:len(segs[at]) - len(segs[at].lstrip("\r\n"))]  # keep the line break
        return seg_term.join(s for i, s in enumerate(segs) if i != at or s.strip())
    position = draw(st.integers(1, max(1, len(els) - 1)))
    while len(els) <= position:
        els.append("")
    els[position] = draw(st.sampled_from(VALUES))
    segs[at] = ele.join(els)
    return seg_term.join(segs)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=mutated())
def test_no_member_coverage_or_payment_line_is_ever_lost_silently(text: str) -> None:
    result = parse_bytes(text.encode(), "mutated.x12", IDS)
    found = structure(text)
    structure_cache[id(result)] = found
    try:
        lost = [u for u in found.units if not _explained(u, result, found.sets)]
        assert not lost, [(u.kind, u.line, [e.text() for e in result.errors], result.notices) for u in lost]
        for event in result.events:
            assert codec.decode_input(codec.encode(event)) == event
            if isinstance(event, EnrollmentChanged) and event.tier is None and event.action != "terminate":
                assert event.missing_elements and event.missing_elements[0].startswith("HD05 (file mutated.x12")
    finally:
        structure_cache.pop(id(result), None)
