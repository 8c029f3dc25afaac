"""What every adapter returns: events, errors that say where and why, discrepancies with amounts."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from events.types import InputEvent

FORMATS = ("x12-834", "x12-820", "csv", "jsonl")


@dataclass(frozen=True, slots=True)
class IngestError:
    """One rejected segment, line or row. ``element`` is an X12 reference (INS03) or a CSV column."""

    file: str
    reason: str
    line: int | None = None
    segment: int | None = None  # position of the segment in its transaction set (SE01 counts these)
    segment_id: str | None = None
    loop: str | None = None
    element: str | None = None
    # The acknowledgment's code for it: IK403 for an element error, IK304 for a segment, IK502 for
    # ST/SE, AK905 for GS/GE, TA105 for ISA/IEA (pyx12's, when pyx12 found it)
    code: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        where = self.file + (f":{self.line}" if self.line is not None else "")
        bits = []
        if self.segment_id:
            bits.append(f"segment {self.segment_id}" + (f" #{self.segment}" if self.segment is not None else ""))
        if self.loop:
            bits.append(f"loop {self.loop}")
        if self.element:
            bits.append(self.element)
        return f"{where}: {' '.join(bits) or '-'}: {self.reason}"


@dataclass(frozen=True, slots=True)
class FileDiscrepancy:
    """A finding about the file itself (a remittance that does not balance), amounts in cents."""

    kind: str
    expected_cents: int
    actual_cents: int
    reason: str
    file: str
    line: int | None = None
    segment_id: str | None = None
    loop: str | None = None
    remittance_id: str | None = None
    trace_number: str | None = None
    remittance_line: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class ParsedFile:
    path: str
    format: str
    events: list[InputEvent] = field(default_factory=list)
    errors: list[IngestError] = field(default_factory=list)
    discrepancies: list[FileDiscrepancy] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # e.g. "resubmission of ..."
    audit_ids: set[str] = field(default_factory=set)  # 834 events that restate terms (audit), see audit.py
    audit: list[dict[str, Any]] = field(default_factory=list)  # differences found by compare_audit
    full_file: bool = False  # a full-file audit (BGN08=4): the sponsor's whole enrollment
    # X12: events published from each transaction set, by the line of its ST (the acknowledgment
    # says which were accepted); a transaction set absent here gave none
    accepted: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class IngestLimits:
    max_file_bytes: int = 256 * 1024 * 1024
    max_line_bytes: int = 64 * 1024
    max_members: int = 1_000_000
    max_errors: int = 1000  # more errors than this: reading stops, nothing of the file is ingested


REASON_CHARS_MAX = 500


def printable(text: str, limit: int = REASON_CHARS_MAX) -> str:
    """``text`` safe to print and store: control and other unprintable characters escaped (a reason
    may quote a file's bytes), at most ``limit`` characters."""
    out = text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return out if len(out) <= limit else out[:limit - 1] + "\u2026"


def clean_errors(errors: list[IngestError]) -> list[IngestError]:
    return [e if e.reason.isprintable() and len(e.reason) <= REASON_CHARS_MAX
            and (e.segment_id is None or e.segment_id.isprintable())
            else replace(e, reason=printable(e.reason), segment_id=printable(e.segment_id, 8) if e.segment_id else None)
            for e in errors]


def errors_capped(path: str, max_errors: int, line: int | None) -> IngestError:
    """The last error of a file that reached ``max_errors``."""
    return IngestError(
        file=path, line=line, reason=f"stopped after {max_errors} errors (setting ingest_errors_max): the rest of"
        " the file is not read and nothing of it is ingested")


def split_exactly(amount: int, parts: int) -> list[int]:
    """``amount`` cents in ``parts`` integer parts that sum to it exactly: equal parts, the remainder
    cents one each to the first parts (1000 in 3: 334, 333, 333; -1000 in 3: -334, -333, -333)."""
    assert parts > 0
    sign = -1 if amount < 0 else 1
    each, rest = divmod(abs(amount), parts)
    return [sign * (each + (1 if i < rest else 0)) for i in range(parts)]


class TooLarge(ValueError):
    """A limit was passed; the message names the limit, the setting and the value."""


class MemberIds:
    """Turns an SSN into a member id that is safe to store: a known member id when the mapping has one,
    else ``ssn-`` and the first 24 hex digits of HMAC-SHA256(key, ssn). The SSN itself never leaves."""

    def __init__(self, key: bytes, known: Mapping[str, str] | None = None) -> None:
        if not key:
            raise ValueError("member id HMAC key is empty")
        self._key = key
        self._known = dict(known or {})

    def pseudonym(self, ssn: str) -> str:
        digits = re.sub(r"\D", "", ssn)
        known = self._known.get(digits)
        if known is not None:
            return known
        return "ssn-" + hmac.new(self._key, digits.encode(), hashlib.sha256).hexdigest()[:24]


