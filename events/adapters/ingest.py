"""``benefits-ledger ingest``: parse files, report, and publish what is valid."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
    acknowledgments: list[str] = field(default_factory=list)  # files written by --ack

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
            "acknowledgments": self.acknowledgments,
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
        out.extend(f"acknowledgment: {a}" for a in self.acknowledgments)
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
                        max_members=settings.ingest_max_members_per_file, max_errors=settings.ingest_errors_max)


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


class ControlNumbers:
    """The interchange control numbers (ISA13) of the acknowledgments written to one directory: the last
    one used is kept in ``.interchange-control-number`` there, so each is used once (9 digits, then
    it starts again at 1). A lock keeps two ingests writing to the directory apart."""

    FILE = ".interchange-control-number"

    def __init__(self, directory: Path) -> None:
        self.path = directory / self.FILE

    def __enter__(self) -> ControlNumbers:
        import fcntl

        self._fh = self.path.open("a+", encoding="ascii")
        fcntl.flock(self._fh, fcntl.LOCK_EX)
        self._fh.seek(0)
        text = self._fh.read().strip()
        self.last = int(text) if text.isdigit() else 0
        return self

    def next(self) -> int:
        self.last = self.last % 999_999_999 + 1
        return self.last

    def __exit__(self, *exc: object) -> None:
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(f"{self.last}\n")
        self._fh.close()  # closing releases the lock


def write_acknowledgments(files: Sequence[ParsedFile], directory: Path, now: datetime,
                          withheld: Sequence[str] = ()) -> list[str]:
    """For every X12 file, its interchanges' 999 and TA1 (events.adapters.ack) written to ``directory``
    as ``<file name>.<ISA13>.999`` and ``.ta1``. Returns the paths written."""
    from events.adapters.ack import acknowledgments

    directory.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    with ControlNumbers(directory) as numbers:
        for parsed in files:
            if not parsed.format.startswith("x12"):
                continue
            try:
                data = Path(parsed.path).read_bytes()
            except OSError:
                continue  # the read error is already in the report
            try:
                text = data.decode("utf-8-sig")
            except UnicodeDecodeError:
                text = data.decode("latin-1")
            for ack in acknowledgments(text, parsed, now=now, next_control=numbers.next,
                                       withheld=parsed.path in withheld):
                target = directory / f"{Path(parsed.path).name}.{ack.interchange}.{ack.kind.lower()}"
                target.write_text(ack.text, encoding="ascii", errors="replace")
                written.append(str(target))
    return written


def ingest(paths: Sequence[str], settings: Any, *, dry_run: bool = False, strict: bool = False,
           publisher: Callable[[], Any] | None = None,
           ledger: Callable[[list[str]], Mapping[str, Sequence[Any]]] | None = None,
           agency_accounts: Callable[[list[str]], list[str]] | None = None,
           ack_dir: Path | None = None, now: datetime | None = None) -> IngestReport:
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
    if not (dry_run or report.withheld):
        events: list[InputEvent] = [e for f in files for e in f.events]
        if events and publisher is not None:
            with publisher() as pub:
                report.records = pub.publish(events)
            report.published_events = len(events)
    if ack_dir is not None:
        # Written once the events are published (a failed publish raises before). --strict with an error
        # anywhere publishes nothing: every transaction set of every file is then rejected. A dry run
        # writes what would be acknowledged.
        report.acknowledgments = write_acknowledgments(
            files, ack_dir, now or datetime.now(UTC), withheld=[f.path for f in files] if report.withheld else ())
    return report
