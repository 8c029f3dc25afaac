"""JSON lines (the codec's wire format) and CSV (one documented column set per event type).

CSV rows are validated with pydantic models generated from the event structs, so a column set is
always the event's fields: ``event_id, account_id, effective_on, occurred_at`` and the type's own
fields (``source``, ``causation_id`` and fields with defaults are optional). Money columns are integer
cents. The header decides the event type; a ``type`` column, when present, decides it per row.
"""

from __future__ import annotations

import csv
import io
import re
import typing
from datetime import date, datetime
from functools import cache
from typing import Annotated, Any

import msgspec
import pydantic
from pydantic import BeforeValidator

from events import codec
from events.adapters.common import IngestError, errors_capped
from events.types import INPUT_TYPES, Event, InputEvent, tag_of

_INTEGER = re.compile(r"^-?\d+$")


def _cents(value: Any) -> Any:
    if isinstance(value, str) and not _INTEGER.match(value.strip()):
        raise ValueError(f"{value!r} is not a whole number of cents")
    return value


def _blank_is_none(value: Any) -> Any:
    return None if isinstance(value, str) and value.strip() == "" else value


def _is_column(f: msgspec.structs.FieldInfo) -> bool:
    """A field a CSV cell can hold: not the schema version, not a list of structured items (such as a
    remittance line's adjustments, which come from X12 files, never from CSV)."""
    return f.name != "schema_version" and typing.get_origin(f.type) not in (tuple, list)


@cache
def row_model(cls: type[Event]) -> type[pydantic.BaseModel]:
    """The pydantic model of one CSV row of ``cls``."""
    fields: dict[str, Any] = {}
    for f in msgspec.structs.fields(cls):
        if not _is_column(f):
            continue
        annotation: Any = f.type
        if f.name.endswith("_cents"):
            annotation = Annotated[annotation, BeforeValidator(_cents)]
        annotation = Annotated[annotation, BeforeValidator(_blank_is_none)]
        default: Any = ... if f.required else (f.default if f.default is not msgspec.NODEFAULT else None)
        fields[f.name] = (annotation, default)
    return pydantic.create_model(f"{cls.__name__}Row", __config__=pydantic.ConfigDict(extra="forbid"), **fields)


def columns(cls: type[Event]) -> tuple[list[str], list[str]]:
    """(required, optional) columns of an event type."""
    required: list[str] = []
    optional: list[str] = []
    for f in msgspec.structs.fields(cls):
        if not _is_column(f):
            continue
        (required if f.required else optional).append(f.name)
    return required, optional


def _type_for_header(header: list[str]) -> type[Event] | None:
    names = set(header) - {"type"}
    matches = []
    for cls in INPUT_TYPES:
        required, optional = columns(cls)
        if set(required) <= names <= set(required) | set(optional):
            matches.append(cls)
    return matches[0] if len(matches) == 1 else None


def parse_csv(text: str, path: str, *, max_line_bytes: int, max_rows: int, max_errors: int | None = None
              ) -> tuple[list[InputEvent], list[IngestError]]:
    events: list[InputEvent] = []
    errors: list[IngestError] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        return events, [IngestError(file=path, line=1, reason="empty CSV file")]
    except csv.Error as exc:
        return events, [IngestError(file=path, line=1, element="header", reason=f"malformed CSV: {exc}")]
    by_tag = {tag_of(c): c for c in INPUT_TYPES}
    fixed = _type_for_header(header)
    if fixed is None and "type" not in header:
        sets = "; ".join(f"{tag_of(c)}: {', '.join(columns(c)[0])}" for c in INPUT_TYPES)
        return events, [IngestError(file=path, line=1, element="header",
                                    reason=f"the columns match no single event type (required columns: {sets})")]
    rows = 0
    while True:
        line_no = reader.line_num + 1
        if _over(errors, max_errors):
            break
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            errors.append(IngestError(file=path, line=line_no, reason=f"malformed CSV: {exc}"))
            break
        if not any(cell.strip() for cell in row):
            continue
        rows += 1
        if rows > max_rows:
            errors.append(IngestError(file=path, line=line_no,
                                      reason=f"more than {max_rows} rows (setting ingest_max_members_per_file);"
                                             " nothing of the file is ingested"))
            events.clear()
            break
        if sum(len(c) for c in row) + len(row) > max_line_bytes:
            errors.append(IngestError(file=path, line=line_no,
                                      reason=f"row longer than {max_line_bytes} bytes (setting ingest_max_line_bytes)"))
            continue
        if len(row) != len(header):
            errors.append(IngestError(file=path, line=line_no,
                                      reason=f"{len(row)} cells, the header has {len(header)}"))
            continue
        data = dict(zip(header, row, strict=True))
        cls = fixed
        if "type" in data:
            cls = by_tag.get(data.pop("type").strip())
            if cls is None:
                errors.append(IngestError(file=path, line=line_no, element="type",
                                          reason=f"unknown event type; one of {', '.join(by_tag)}"))
                continue
        assert cls is not None
        event, error = _row_event(cls, data, path, line_no)
        if event is not None:
            events.append(event)
        if error is not None:
            errors.append(error)
    return _capped(events, errors, path, max_errors)


def _over(errors: list[IngestError], max_errors: int | None) -> bool:
    return max_errors is not None and len(errors) > max_errors


def _capped(events: list[InputEvent], errors: list[IngestError], path: str, max_errors: int | None
            ) -> tuple[list[InputEvent], list[IngestError]]:
    """More than ``max_errors`` errors: the first ones, a last one saying reading stopped, no events."""
    if max_errors is None or len(errors) <= max_errors:
        return events, errors
    return [], [*errors[:max_errors], errors_capped(path, max_errors, errors[max_errors].line)]


def _row_event(cls: type[Event], data: dict[str, str], path: str, line_no: int
               ) -> tuple[InputEvent | None, IngestError | None]:
    try:
        row = row_model(cls).model_validate(data)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        column = ".".join(str(p) for p in first["loc"]) or None
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        return None, IngestError(file=path, line=line_no, element=column, reason=f"{first['msg']}{more}")
    values = {k: v for k, v in row.model_dump().items() if v is not None}
    values = {k: (v.isoformat() if isinstance(v, date | datetime) else v) for k, v in values.items()}
    values["type"] = tag_of(cls)
    try:
        event = codec.decode_input(msgspec.json.encode(values))  # the codec's own rules (invariants)
    except codec.EventDecodeError as exc:
        return None, IngestError(file=path, line=line_no, element=exc.field, reason=exc.reason)
    return event, None


def parse_jsonl(data: bytes, path: str, *, max_line_bytes: int, max_rows: int, max_errors: int | None = None
                ) -> tuple[list[InputEvent], list[IngestError]]:
    events: list[InputEvent] = []
    errors: list[IngestError] = []
    count = 0
    for line_no, line in enumerate(data.splitlines(), start=1):
        if _over(errors, max_errors):
            break
        if not line.strip():
            continue
        count += 1
        if count > max_rows:
            errors.append(IngestError(file=path, line=line_no,
                                      reason=f"more than {max_rows} lines (setting ingest_max_members_per_file);"
                                      " nothing of the file is ingested"))
            events.clear()
            break
        if len(line) > max_line_bytes:
            errors.append(IngestError(
                file=path, line=line_no,
                reason=f"line longer than {max_line_bytes} bytes (setting ingest_max_line_bytes)"))
            continue
        try:
            events.append(codec.decode_input(line))
        except codec.EventDecodeError as exc:
            errors.append(IngestError(file=path, line=line_no, element=exc.field, reason=exc.reason))
        except UnicodeDecodeError as exc:  # the codec lets this one through (see the xfail in the tests)
            errors.append(IngestError(file=path, line=line_no, reason=f"not UTF-8 JSON: {exc}"))
    return _capped(events, errors, path, max_errors)
