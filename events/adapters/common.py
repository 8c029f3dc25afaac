"""What every adapter returns: events, errors that say where and why, discrepancies with amounts."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
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
    code: str | None = None  # pyx12's error code, when pyx12 found it

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


@dataclass(frozen=True, slots=True)
class IngestLimits:
    max_file_bytes: int = 256 * 1024 * 1024
    max_line_bytes: int = 64 * 1024
    max_members: int = 1_000_000


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


