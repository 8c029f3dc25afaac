"""Acknowledgments for the sender of an X12 file: for every interchange a 999 (implementation
acknowledgment, 005010X231A1) listing each transaction set accepted or rejected with its errors, and a
TA1 (interchange acknowledgment) when the envelope had errors or the sender asked for one (ISA14 1).

Built from what ingest reported, not from a second validation: the errors (pyx12's and the mapping's,
with their IK3/IK4 codes) and the events each transaction set gave (``ParsedFile.accepted``). A
transaction set is accepted (IK5 A) when it gave events and no error, accepted with errors noted (E)
when it gave events and errors (the members with errors were not published), rejected (R) when it gave
no event and had errors or was not mapped at all (no SE, a type ingest does not read). pyx12's own
generator (``error_999_visitor``) is not used: it writes one envelope for all interchanges with random
control numbers and knows only its syntax errors, not what ingest accepted.

The TA1 goes in an interchange of its own (ISA, TA1, IEA with no functional group), as X12 places it;
the 999 in another, one ST*999 per functional group received. Pure: text in, texts out; the caller
gives the time and the interchange control numbers (``next_control``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from events.adapters.common import IngestError, ParsedFile
from events.adapters.x12 import ISA_LENGTH, Interchange, split_interchanges

VERSION_999 = "005010X231A1"
# Codes each acknowledgment segment may carry (X12 005010X231A1 and the TA1 of the control standard)
IK304 = {"1", "2", "3", "4", "5", "6", "7", "8", "I4", "I6", "I7", "I8", "I9"}
IK403 = {"1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "12", "13", "I6", "I9", "I10", "I11", "I12", "I13"}
IK502 = {"1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "15", "16", "17", "18", "19", "23",
         "24", "25", "26", "27", "I5", "I6"}
AK905 = {"1", "2", "3", "4", "5", "6", "18", "19", "23", "24", "25", "26"}
TA105 = {f"{n:03d}" for n in range(32)}
_SAFE = re.compile(r"[*~:^\r\n]")


@dataclass(frozen=True, slots=True)
class Acknowledgment:
    kind: str  # "999" or "TA1"
    interchange: str  # the ISA13 it acknowledges
    text: str


@dataclass(slots=True)
class _Set:
    els: list[str]
    line: int
    last: int  # the SE's line, else the interchange's last
    terminated: bool = False
    errors: list[IngestError] = field(default_factory=list)


@dataclass(slots=True)
class _Group:
    els: list[str]
    line: int
    last: int  # the GE's line, else the line before the next GS, else the interchange's last
    sets: list[_Set] = field(default_factory=list)
    errors: list[IngestError] = field(default_factory=list)
    ge: list[str] | None = None


@dataclass(slots=True)
class _Envelope:
    isa: list[str]
    first: int
    last: int
    groups: list[_Group] = field(default_factory=list)
    errors: list[IngestError] = field(default_factory=list)


def _get(els: list[str], n: int) -> str:
    return els[n].strip() if n < len(els) else ""


def _safe(value: str) -> str:
    """A value copied from the sender's file, without our separators (theirs may differ)."""
    return _SAFE.sub(" ", value)


def _envelopes(chunk: Interchange) -> _Envelope:
    head = chunk.head
    ele, seg_term = head[3], head[ISA_LENGTH - 1]
    body = chunk.source[chunk.start:chunk.end]
    raw = [s.strip("\r\n\t ") for s in body.split(seg_term)]
    segments = [s.split(ele) for s in raw if s]
    env = _Envelope(isa=segments[0], first=chunk.offset + 1, last=chunk.offset + len(segments) + (
        1 if chunk.trailing else 0))
    group: _Group | None = None
    current: _Set | None = None
    for i, els in enumerate(segments):
        line = chunk.offset + i + 1
        seg_id = els[0].strip()
        if seg_id == "GS":
            if env.groups and env.groups[-1].last == env.last:
                env.groups[-1].last = line - 1
            group = _Group(els=els, line=line, last=env.last)
            env.groups.append(group)
        elif seg_id == "ST" and group is not None:
            current = _Set(els=els, line=line, last=env.last)
            group.sets.append(current)
        elif seg_id == "SE" and current is not None:
            current.last, current.terminated, current = line, True, None
        elif seg_id == "GE" and group is not None:
            group.ge, group.last, group = els, line, None
    return env


def _place(envs: list[_Envelope], errors: list[IngestError]) -> None:
    """Each error to the transaction set, functional group or interchange envelope it belongs to."""
    for e in errors:
        env = next((x for x in envs if e.line is not None and x.first <= e.line <= x.last), None)
        if env is None or e.line is None:
            continue
        group = next((g for g in env.groups if g.line <= e.line <= g.last), None)
        if e.segment_id in ("ISA", "IEA") or group is None:
            env.errors.append(e)
        elif e.segment_id in ("GS", "GE"):
            group.errors.append(e)
        else:
            ts = next((t for t in group.sets if t.line <= e.line <= t.last), None)
            (ts.errors if ts is not None else group.errors).append(e)


def _element_position(e: IngestError) -> int | None:
    if not e.element or not e.segment_id or not e.element.startswith(e.segment_id):
        return None
    digits = e.element[len(e.segment_id):]
    return int(digits) if digits.isdigit() else None


def _set_status(ts: _Set, accepted: dict[int, int], withheld: bool) -> str:
    events = accepted.get(ts.line)
    if withheld or events is None or not ts.terminated:
        return "R"
    if ts.errors:
        return "E" if events > 0 else "R"
    return "A"


def _segments_999(group: _Group, accepted: dict[int, int], control: str, withheld: bool
                  ) -> tuple[list[list[str]], int]:
    """The ST*999 for one functional group, and how many of its transaction sets were accepted."""
    out: list[list[str]] = [["ST", "999", control, VERSION_999],
                            ["AK1", _safe(_get(group.els, 1)), _safe(_get(group.els, 6)), _safe(_get(group.els, 8))]]
    accepted_count = 0
    statuses = []
    for ts in group.sets:
        out.append(["AK2", _safe(_get(ts.els, 1)), _safe(_get(ts.els, 2))]
                   + ([_safe(_get(ts.els, 3))] if _get(ts.els, 3) else []))
        trailer_codes: list[str] = []
        by_segment: dict[tuple[int, str], list[IngestError]] = {}
        for e in ts.errors:
            if e.segment_id in ("ST", "SE"):
                if e.code in IK502:
                    trailer_codes.append(e.code)
                continue
            position = e.segment if e.segment is not None else (e.line or ts.line) - ts.line + 1
            by_segment.setdefault((position, e.segment_id or ""), []).append(e)
        for (position, seg_id), errs in sorted(by_segment.items()):
            elements = [(p, e) for e in errs if (p := _element_position(e)) is not None]
            segment_codes = sorted({e.code if e.code in IK304 else ("I6" if e.element else "8")
                                    for e in errs if _element_position(e) is None})
            if elements and "8" not in segment_codes:
                segment_codes.append("8")
            for code in segment_codes:
                out.append(["IK3", _safe(seg_id), str(position), "", code])
            for p, e in sorted(elements, key=lambda pe: pe[0]):
                out.append(["IK4", str(p), "", e.code if e.code in IK403 else "I12"])
        status = _set_status(ts, accepted, withheld)
        codes = sorted(set(trailer_codes) | ({"5"} if by_segment else set()))
        if status == "R" and not codes and not withheld:
            codes = ["2"] if not ts.terminated else ["5"]
        out.append(["IK5", status, *codes[:5]])
        statuses.append(status)
        accepted_count += status in ("A", "E")
    group_codes = sorted({e.code for e in group.errors if e.code in AK905})
    if group.ge is None:
        group_codes = sorted({*group_codes, "3"})
    if not statuses or all(s == "R" for s in statuses):
        ak901 = "R"
    elif all(s == "A" for s in statuses) and not group_codes:
        ak901 = "A"
    elif any(s == "R" for s in statuses):
        ak901 = "P"
    else:
        ak901 = "E"
    included = _get(group.ge, 1) if group.ge is not None and _get(group.ge, 1).isdigit() else str(len(group.sets))
    out.append(["AK9", ak901, included, str(len(group.sets)), str(accepted_count), *group_codes[:5]])
    out.append(["SE", str(len(out) + 1), control])
    return out, accepted_count


def _isa(received: list[str], control: int, now: datetime) -> list[str]:
    """Our ISA back: the sender's receiver is our sender and the other way round."""
    def party(n: int) -> str:
        return _safe(received[n] if n < len(received) else "").ljust(15)[:15]

    return ["ISA", "00", " " * 10, "00", " " * 10, _get(received, 7).ljust(2)[:2], party(8),
            _get(received, 5).ljust(2)[:2], party(6), now.strftime("%y%m%d"), now.strftime("%H%M"), "^", "00501",
            f"{control:09d}", "0", (_get(received, 15) or "P")[:1], ":"]


def _render(segments: list[list[str]]) -> str:
    return "".join("*".join(s) + "~\n" for s in segments)


def acknowledgments(text: str, parsed: ParsedFile, *, now: datetime, next_control: Callable[[], int],
                    withheld: bool = False) -> list[Acknowledgment]:
    """The 999 (and TA1 where due) of every interchange of an X12 file that ingest parsed. ``withheld``:
    nothing of the file was published (``ingest --strict`` and the file had an error), so every
    transaction set is rejected; one without an error of its own carries no IK502 code."""
    if not text.lstrip("\ufeff\r\n\t ").startswith("ISA"):
        return []
    chunks = [c for c in split_interchanges(text) if c.source.startswith("ISA", c.start)
              and c.end - c.start >= ISA_LENGTH]
    envs = [_envelopes(c) for c in chunks]
    _place(envs, parsed.errors)
    out: list[Acknowledgment] = []
    for env in envs:
        isa13 = _get(env.isa, 13)
        groups_accepted = 0
        if env.groups:
            control = next_control()
            gs_control = str(control)
            body: list[list[str]] = [_isa(env.isa, control, now)]
            first = env.groups[0].els
            body.append(["GS", "FA", _safe(_get(first, 3)), _safe(_get(first, 2)), now.strftime("%Y%m%d"),
                         now.strftime("%H%M"), gs_control, "X", VERSION_999])
            for n, group in enumerate(env.groups, start=1):
                segments, accepted_count = _segments_999(group, parsed.accepted, f"{n:04d}", withheld)
                body.extend(segments)
                groups_accepted += accepted_count > 0
            body.append(["GE", str(len(env.groups)), gs_control])
            body.append(["IEA", "1", f"{control:09d}"])
            out.append(Acknowledgment(kind="999", interchange=isa13, text=_render(body)))
        envelope_codes = [e.code for e in env.errors if e.code in TA105]
        if env.errors or _get(env.isa, 14) == "1":
            if not env.errors:
                ta104, note = "A", "000"
            else:
                ta104 = "E" if groups_accepted else "R"
                note = envelope_codes[0] if envelope_codes else "024"
            control = next_control()
            ta1 = [_isa(env.isa, control, now),
                   ["TA1", _safe(isa13), _get(env.isa, 9), _get(env.isa, 10), ta104, note],
                   ["IEA", "0", f"{control:09d}"]]
            out.append(Acknowledgment(kind="TA1", interchange=isa13, text=_render(ta1)))
    return out
