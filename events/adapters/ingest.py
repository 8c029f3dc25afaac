"""``benefits-ledger ingest``: parse files, report, and publish what is valid."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from events import codec
from events.adapters import IngestError, IngestLimits, MemberIds, ParsedFile, parse_path
from events.types import EnrollmentChanged, InputEvent


@dataclass(slots=True)
class IngestReport:
    files: list[ParsedFile]
    dry_run: bool
    strict: bool
    published_events: int = 0
    records: int = 0
    withheld: list[str] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return sum(len(f.errors) for f in self.files)

    def to_json(self) -> dict[str, Any]:
        return {
            "files": [
                {
                    "path": f.path,
                    "format": f.format,
                    "events": [json.loads(codec.encode(e)) for e in f.events],
                    "errors": [e.to_dict() for e in f.errors],
                    "discrepancies": [d.to_dict() for d in f.discrepancies],
                    "notices": f.notices,
                    "audit": f.audit,
                }
                for f in self.files
            ],
            "dry_run": self.dry_run,
            "strict": self.strict,
            "published_events": self.published_events,
            "records": self.records,
        }

    def text_lines(self) -> tuple[list[str], list[str]]:
        """(stdout lines, stderr lines)."""
        out: list[str] = []
        err: list[str] = []
        for f in self.files:
            err.extend(e.text() for e in f.errors)
            for d in f.discrepancies:
                err.append(f"{d.file}:{d.line}: {d.kind}: expected {d.expected_cents} cents, actual"
                           f" {d.actual_cents} cents: {d.reason}")
            err.extend(f.notices)
            for a in f.audit:
                err.append(f"{f.path}: audit {a['difference']}: {a['account_id']} {a['member_id']}"
                           f" {a['coverage_line']}: ledger {a['ledger']}, file {a['file']}"
                           + (f"; published as {a['published']}" if a["published"] else "; nothing published"))
            out.append(f"{f.path}: {f.format}, {len(f.events)} events, {len(f.errors)} errors,"
                       f" {len(f.discrepancies)} discrepancies")
        if self.dry_run:
            out.append(f"dry run: {sum(len(f.events) for f in self.files)} events would be published")
        elif self.withheld:
            out.append(f"--strict: nothing published, {len(self.withheld)} files have errors")
        else:
            out.append(f"published {self.published_events} events ({self.records} records)")
        return out, err


def member_ids(settings: Any) -> MemberIds:
    """Raises processor.keys.KeyRequired without a key of at least 32 bytes (outside the embedded demo)."""
    from processor.keys import member_id_key

    return MemberIds(member_id_key(settings))


def limits_of(settings: Any) -> IngestLimits:
    return IngestLimits(max_file_bytes=settings.ingest_max_file_bytes,
                        max_line_bytes=settings.ingest_max_line_bytes,
                        max_members=settings.ingest_max_members_per_file)


def parse_files(paths: Sequence[str], ids: MemberIds, limits: IngestLimits) -> list[ParsedFile]:
    parsed = []
    for name in paths:
        path = Path(name)
        try:
            parsed.append(parse_path(path, ids, limits))
        except OSError as exc:
            parsed.append(ParsedFile(path=name, format="unknown",
                                     errors=[IngestError(file=name, reason=f"cannot read: {exc.strerror or exc}")]))
    return parsed


def ingest(paths: Sequence[str], settings: Any, *, dry_run: bool = False, strict: bool = False,
           publisher: Callable[[], Any] | None = None,
           ledger: Callable[[list[str]], Mapping[str, Sequence[Any]]] | None = None,
           agency_accounts: Callable[[list[str]], list[str]] | None = None) -> IngestReport:
    """Parse every file first, then publish (unless dry run, or --strict and some file has errors).

    ``ledger(accounts)`` returns the ledger's current coverages of those accounts; when given, audit
    834s are compared with them (events.adapters.audit) instead of being published as changes. For a
    full-file audit, ``agency_accounts(agencies)`` adds every ledger account of the file's agencies, so a
    member the sponsor's whole-enrollment file leaves out is reported too."""
    from events.adapters.audit import compare_audit

    files = parse_files(paths, member_ids(settings), limits_of(settings))
    if ledger is not None:
        for i, f in enumerate(files):
            if f.audit_ids:
                named = {e.account_id for e in f.events if e.event_id in f.audit_ids}
                if f.full_file and agency_accounts is not None:
                    agencies = sorted({e.agency_id for e in f.events if isinstance(e, EnrollmentChanged)})
                    named.update(agency_accounts(agencies))
                accounts = sorted(named)
                files[i] = compare_audit(f, ledger(accounts))
    report = IngestReport(files=files, dry_run=dry_run, strict=strict)
    if strict:
        report.withheld = [f.path for f in files if f.errors]
    if dry_run or report.withheld:
        return report
    events: list[InputEvent] = [e for f in files for e in f.events]
    if events and publisher is not None:
        with publisher() as pub:
            report.records = pub.publish(events)
        report.published_events = len(events)
    return report
