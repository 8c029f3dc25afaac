"""Files upstream systems hand over, turned into events: X12 834 and 820, CSV and JSON lines.

The format is recognised by content, never by file name. ``parse_bytes`` is pure (bytes in, a
ParsedFile out); ``parse_path`` adds reading the file within the size limit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from events.adapters.common import (
    FORMATS,
    FileDiscrepancy,
    IngestError,
    IngestLimits,
    MemberIds,
    ParsedFile,
    TooLarge,
    clean_errors,
    errors_capped,
)
from events.money import AmountError, to_cents
from events.types import InputEvent

__all__ = [
    "FORMATS",
    "AmountError",
    "FileDiscrepancy",
    "IngestError",
    "IngestLimits",
    "MemberIds",
    "ParsedFile",
    "TooLarge",
    "detect_format",
    "parse_bytes",
    "parse_path",
    "to_cents",
]


def detect_format(data: bytes) -> str | None:
    """x12-834, x12-820, jsonl or csv from the first bytes; None when it is none of them."""
    from events.adapters.x12 import sniff_transaction

    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"ISA"):
        found = sniff_transaction(data)
        if found is None:
            return None
        st01, _version = found
        return {"834": "x12-834", "820": "x12-820"}.get(st01)
    if head.startswith(b"{"):
        return "jsonl"
    first = head.split(b"\n", 1)[0]
    if b"," in first and b"event_id" in first:
        return "csv"
    return None


def parse_bytes(data: bytes, path: str, ids: MemberIds, limits: IngestLimits | None = None) -> ParsedFile:
    """Events, errors and discrepancies of one file. Nothing here reads or writes anything."""
    result = _parse_bytes(data, path, ids, limits)
    result.errors = clean_errors(result.errors)
    return result


def _parse_bytes(data: bytes, path: str, ids: MemberIds, limits: IngestLimits | None) -> ParsedFile:
    from events.adapters.tabular import parse_csv, parse_jsonl

    limits = limits or IngestLimits()
    if len(data) > limits.max_file_bytes:
        return ParsedFile(path=path, format="unknown", errors=[IngestError(
            file=path, reason=f"file is {len(data)} bytes, more than the limit of {limits.max_file_bytes}"
            " (setting ingest_max_file_bytes)")])
    fmt = detect_format(data)
    if fmt is None:
        return ParsedFile(path=path, format="unknown", errors=[IngestError(
            file=path, line=1, reason="not a recognised format: expected an X12 834 or 820 interchange (ISA...),"
            " JSON lines ({...}) or CSV with a header naming event_id")])
    result = ParsedFile(path=path, format=fmt)
    if fmt == "jsonl":
        result.events, result.errors = parse_jsonl(data, path, max_line_bytes=limits.max_line_bytes,
                                                   max_rows=limits.max_members, max_errors=limits.max_errors)
        return result
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if fmt == "csv":
            result.errors.append(IngestError(file=path, reason=f"not UTF-8 text: {exc}"))
            return result
        text = data.decode("latin-1")
    if fmt == "csv":
        result.events, result.errors = parse_csv(text, path, max_line_bytes=limits.max_line_bytes,
                                                 max_rows=limits.max_members, max_errors=limits.max_errors)
        return result
    return _parse_x12(text, path, fmt, ids, limits, result)


def _parse_x12(text: str, path: str, fmt: str, ids: MemberIds, limits: IngestLimits, result: ParsedFile
               ) -> ParsedFile:
    import os

    from events.adapters.x12 import (
        ISA_LENGTH,
        PARALLEL_MIN_SEGMENTS,
        read_x12,
        read_x12_parallel,
        redact,
        segment_stats,
    )
    from events.adapters.x12_820 import map_820
    from events.adapters.x12_834 import map_834

    stripped = text.lstrip("\ufeff\r\n\t ")
    count, longest = segment_stats(stripped, stripped[ISA_LENGTH - 1])
    if longest > limits.max_line_bytes:
        result.errors.append(IngestError(
            file=path, reason=f"a segment is {longest} characters, more than the limit of {limits.max_line_bytes}"
            " (setting ingest_max_line_bytes)"))
        return result
    workers = min(os.cpu_count() or 1, 8)
    if count >= PARALLEL_MIN_SEGMENTS and workers > 1:
        segs, syntax = read_x12_parallel(text, path, workers, max_errors=limits.max_errors)
    else:
        segs, syntax = read_x12(text, path, max_errors=limits.max_errors)
    bad_lines = frozenset(e.line for e in syntax if e.line is not None and e.segment_id not in
                          ("ISA", "IEA", "GS", "GE", "ST", "SE"))
    by_type, unknown = _by_transaction_type(segs, path)
    mapped: list[IngestError] = list(unknown)
    ssns: set[str] = set()
    if by_type.get("834"):
        r834 = map_834(by_type["834"], path, ids, bad_lines=bad_lines, max_members=limits.max_members)
        result.events.extend(r834.events)
        ssns |= r834.ssns
        mapped += r834.errors
        result.notices += r834.notices
        result.audit_ids, result.full_file = r834.audit_ids, r834.full_file
        result.accepted.update(r834.accepted)
    if by_type.get("820"):
        r820 = map_820(by_type["820"], path, ids, bad_lines=bad_lines, max_members=limits.max_members)
        result.events.extend(r820.events)
        ssns |= r820.ssns
        mapped += r820.errors
        result.discrepancies, result.notices = r820.discrepancies, result.notices + r820.notices
        result.accepted.update(r820.accepted)
    result.events, unbounded = _within_bounds(result.events, path)  # e.g. a NUL in a control number
    mapped = [*mapped, *unbounded]
    seen = {(e.line, e.element) for e in syntax}
    errors = syntax + [e for e in mapped if (e.line, e.element) not in seen]
    errors.sort(key=lambda e: (e.line or 0, e.element or ""))
    if len(errors) > limits.max_errors:
        errors = [*errors[:limits.max_errors], errors_capped(path, limits.max_errors, errors[limits.max_errors].line)]
        result.events.clear()
        result.accepted.clear()
    result.errors = redact(errors, ssns)
    return result


_ENVELOPE_IDS = ("ISA", "GS", "GE", "IEA")


def _by_transaction_type(segs: list[Any], path: str) -> tuple[dict[str, list[Any]], list[IngestError]]:
    """The segments of each transaction set type (ST01), each list with the envelopes around them,
    and an error for each transaction set of a type ingest does not read."""
    out: dict[str, list[Any]] = {"834": [], "820": []}
    errors: list[IngestError] = []
    current: str | None = None
    for seg in segs:
        if seg.id in _ENVELOPE_IDS:
            for kept in out.values():
                kept.append(seg)
            continue
        if seg.id == "ST":
            current = seg.get(1)
            if current not in out:
                errors.append(IngestError(
                    file=path, line=seg.line, segment=seg.position or None, segment_id="ST", loop="ST",
                    element="ST01", code="1",
                    reason=f"transaction set {current!r} is not one ingest reads (834 benefit enrollment, 820"
                    " premium payment): nothing of it is ingested"))
        if current in out:
            out[current].append(seg)
        if seg.id == "SE":
            current = None
    return out, errors


def _within_bounds(events: list[InputEvent], path: str) -> tuple[list[InputEvent], list[IngestError]]:
    """The events the codec's bounds accept, and an error for each other (issue 12: every field is bounded
    at the boundary, so publish would refuse them; the file's other events still go)."""
    from events import codec

    kept: list[InputEvent] = []
    errors: list[IngestError] = []
    for event in events:
        try:
            codec.check_bounds(event)
        except codec.EventDecodeError as exc:
            errors.append(IngestError(file=path, element=exc.field,
                                      reason=f"event {event.event_id!r} not published: {exc.reason}"))
        else:
            kept.append(event)
    return kept, errors


def parse_path(path: Path, ids: MemberIds, limits: IngestLimits | None = None) -> ParsedFile:
    limits = limits or IngestLimits()
    size = path.stat().st_size
    if size > limits.max_file_bytes:
        return ParsedFile(path=str(path), format="unknown", errors=[IngestError(
            file=str(path), reason=f"file is {size} bytes, more than the limit of {limits.max_file_bytes}"
            " (setting ingest_max_file_bytes)")])
    with path.open("rb") as fh:
        data = fh.read()
    return parse_bytes(data, str(path), ids, limits)
