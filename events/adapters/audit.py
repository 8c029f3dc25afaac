"""Audit 834s (BGN08 = 4 full file, INS03 = 030) compared with the ledger's enrollment, not applied blindly.

Pure: the parsed file and the ledger's current coverages of its accounts in, the events worth
publishing and the differences out. A coverage the ledger already has on the same terms publishes
nothing; one with other terms is published as a change; one the ledger lacks is published as an add;
one in force in the ledger but absent from a full-file audit is reported, never terminated blindly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import msgspec

from events.adapters.common import ParsedFile
from events.types import EnrollmentChanged, InputEvent


class LedgerCoverage(Protocol):
    """A coverage segment as the ledger holds it (projections.model.CoverageRow)."""

    @property
    def member_id(self) -> str: ...
    @property
    def coverage_line(self) -> str: ...
    @property
    def plan(self) -> str: ...
    @property
    def tier(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def begin_on(self) -> Any: ...
    @property
    def end_on(self) -> Any: ...


def _terms(plan: str, tier: str, status: str, end: Any) -> dict[str, Any]:
    return {"plan": plan, "tier": tier, "status": status, "benefit_end": None if end is None else str(end)}


def compare_audit(parsed: ParsedFile, current: Mapping[str, Sequence[LedgerCoverage]]) -> ParsedFile:
    """A copy of ``parsed`` whose audit events are replaced by what differs from ``current``."""
    if not parsed.audit_ids:
        return parsed
    events: list[InputEvent] = []
    audit: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str]] = set()
    for event in parsed.events:
        if event.event_id not in parsed.audit_ids or not isinstance(event, EnrollmentChanged):
            events.append(event)
            continue
        key: tuple[str, str, str] = (event.account_id, event.member_id, str(event.coverage_line))
        seen.add(key)
        segments = [c for c in current.get(event.account_id, ()) if (c.member_id, c.coverage_line) == key[1:]]
        in_force = [c for c in segments if c.end_on is None or c.end_on >= event.benefit_begin]
        base = {"account_id": event.account_id, "member_id": event.member_id,
                "coverage_line": event.coverage_line, "event_id": event.event_id}
        file_terms = _terms(event.plan, event.tier or "", event.status, event.benefit_end)
        if not in_force:
            events.append(msgspec.structs.replace(event, action="add"))
            audit.append({**base, "difference": "missing_in_ledger", "file": file_terms, "ledger": None,
                          "published": "add"})
            continue
        ledger = max(in_force, key=lambda c: c.begin_on)
        if event.tier is None:  # HD05 not sent: the audit does not contradict the ledger's tier
            file_terms["tier"] = ledger.tier
        ledger_terms = _terms(ledger.plan, ledger.tier, ledger.status, ledger.end_on)
        if ledger_terms == file_terms:
            continue  # the same terms: nothing to publish
        events.append(event)
        audit.append({**base, "difference": "differs", "file": file_terms, "ledger": ledger_terms,
                      "published": "change"})
    for account_id, coverages in current.items():
        for c in coverages:
            held = (account_id, c.member_id, c.coverage_line)
            if held in seen or c.end_on is not None:
                continue
            seen.add(held)
            audit.append({"account_id": account_id, "member_id": c.member_id, "coverage_line": c.coverage_line,
                          "event_id": None, "difference": "missing_in_file", "file": None,
                          "ledger": _terms(c.plan, c.tier, c.status, c.end_on), "published": None})
    unchanged = sum(1 for e in parsed.events if e.event_id in parsed.audit_ids) - sum(
        1 for a in audit if a["published"])
    notices = [*parsed.notices, f"{parsed.path}: audit compared with the ledger: {unchanged} coverages unchanged,"
               f" {len(audit)} differences"]
    return ParsedFile(path=parsed.path, format=parsed.format, events=events, errors=parsed.errors,
                      discrepancies=parsed.discrepancies, notices=notices, audit_ids=parsed.audit_ids, audit=audit,
                      full_file=parsed.full_file)
