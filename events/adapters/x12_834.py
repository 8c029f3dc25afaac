"""X12 834 (005010X220A1) benefit enrollment to EnrollmentChanged events. Pure: segments in, events out.

One event per member coverage loop (2300 HD). A dependent sent without 2300 loops is covered by the
coverages of its subscriber in the same transaction set (one event each). Dependents go on their
subscriber's account (REF*0F of the subscriber). Member ids never carry an SSN: when NM108 is 34 the
id is replaced through MemberIds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from events.adapters.common import IngestError, MemberIds
from events.adapters.x12 import Seg
from events.types import (
    CoverageLine,
    CoverageStatus,
    EnrollmentAction,
    EnrollmentChanged,
    InputEvent,
    Relationship,
)

SOURCE = "x12-834"

Report = Callable[[Seg, "str | None", str], None]

MAINTENANCE: dict[str, EnrollmentAction] = {
    "021": "add", "001": "change", "024": "terminate", "025": "reinstate",
    "030": "change",  # audit or compare: restates the member's terms (see notices)
}
RELATIONSHIP: dict[str, Relationship] = {"18": "self", "01": "spouse", "19": "child", "53": "domestic_partner"}
# INS05: A active, C COBRA; S (surviving insured) and T (TEFRA) are not terminations.
STATUS: dict[str, CoverageStatus] = {"A": "active", "C": "cobra", "S": "active", "T": "active"}
# INS04 maintenance reason codes the ledger acts on (others are kept by the upstream system).
REASON: dict[str, str] = {"03": "death"}
LINES: dict[str, CoverageLine] = {
    "HLT": "health", "HMO": "health", "PPO": "health", "EPO": "health", "POS": "health", "MM": "health",
    "PDG": "health", "MOD": "health", "AK": "health", "AG": "health", "AH": "health", "AJ": "health",
    "FAC": "health", "PRA": "health", "HE": "health", "UR": "health",
    "DEN": "dental", "DCP": "dental", "VIS": "vision", "LIF": "life", "LTD": "ltd", "STD": "std",
}


@dataclass(slots=True)
class _Coverage:
    hd: Seg
    dates: dict[str, Seg] = field(default_factory=dict)


@dataclass(slots=True)
class _Member:
    ins: Seg
    ordinal: int
    refs: dict[str, Seg] = field(default_factory=dict)
    dates: dict[str, Seg] = field(default_factory=dict)
    nm1: Seg | None = None
    coverages: list[_Coverage] = field(default_factory=list)
    last_line: int = 0


@dataclass(slots=True)
class Result834:
    events: list[InputEvent] = field(default_factory=list)
    errors: list[IngestError] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    ssns: set[str] = field(default_factory=set)
    members: int = 0
    audit_ids: set[str] = field(default_factory=set)  # events restating terms (INS03=030, BGN08=4)
    full_file: bool = False  # BGN08=4: the sponsor's whole enrollment


def _d8(text: str) -> date:
    return datetime.strptime(text, "%Y%m%d").date()


def _stamp(d: str, t: str) -> datetime:
    t = (t or "0000")[:4].ljust(4, "0")
    return datetime.strptime(d + t, "%Y%m%d%H%M").replace(tzinfo=UTC)


def map_834(segs: list[Seg], path: str, ids: MemberIds, *, bad_lines: frozenset[int] = frozenset(),
            max_members: int | None = None) -> Result834:
    """Events of every transaction set in the interchange. Members with a line in ``bad_lines`` (pyx12
    found an error there) are rejected whole; the error is already reported."""
    out = Result834()
    env: dict[str, str] = {}
    sponsor = ""
    members: list[_Member] = []
    coverage: _Coverage | None = None

    def err(seg: Seg, element: str | None, reason: str) -> None:
        out.errors.append(IngestError(file=path, reason=reason, line=seg.line, segment=seg.position or None,
                                      segment_id=seg.id, loop=seg.loop, element=element))

    def flush() -> None:
        _transaction(members, env, sponsor, path, ids, bad_lines, out, err)
        members.clear()

    for seg in segs:
        if seg.id == "ISA":
            env["sender"], env["isa13"] = seg.get(6), seg.get(13)
        elif seg.id == "GS":
            env["gs06"], env["gs_date"], env["gs_time"] = seg.get(6), seg.get(4), seg.get(5)
        elif seg.id == "ST":
            env["st02"] = seg.get(2)
            sponsor = ""
            members.clear()
        elif seg.id == "BGN":
            env["bgn01"], env["bgn02"], env["bgn06"], env["bgn08"] = seg.get(1), seg.get(2), seg.get(6), seg.get(8)
            env["bgn_date"], env["bgn_time"] = seg.get(3), seg.get(4)
            if seg.get(1) == "15":
                out.notices.append(
                    f"{path}:{seg.line}: resubmission (BGN01=15) of transaction set {seg.get(6) or '(BGN06 not sent)'}"
                    f" as {seg.get(2)}; events already ingested from the original are duplicates")
            if seg.get(8) == "4":
                out.full_file = True
                out.notices.append(f"{path}:{seg.line}: full-file audit (BGN08=4): compared with the ledger's"
                                   " enrollment with --compare, else each member's terms are published as changes")
        elif seg.id == "N1" and seg.loop == "1000A" and seg.get(1) == "P5":
            sponsor = seg.get(4) or seg.get(2)
        elif seg.id == "INS":
            out.members += 1
            if max_members is not None and out.members > max_members:
                err(seg, None, f"more than {max_members} members in one file (setting ingest_max_members_per_file);"
                    " nothing of the file is ingested")
                out.events.clear()
                return out
            members.append(_Member(ins=seg, ordinal=len(members) + 1))
            coverage = None
        elif seg.id == "SE":
            flush()
        elif members and seg.loop in ("2000", "2100A", "2100B", "2100C", "2100D", "2100E", "2100F", "2100G",
                                      "2100H", "2200", "2300", "2310", "2320", "2330", "2700", "2750"):
            m = members[-1]
            m.last_line = seg.line
            if seg.id == "NM1" and seg.loop == "2100A":
                m.nm1 = seg
                if seg.get(8) == "34" and seg.get(9):
                    out.ssns.add(seg.get(9))
            elif seg.id == "REF" and seg.loop == "2000":
                m.refs.setdefault(seg.get(1), seg)
            elif seg.id == "DTP" and seg.loop == "2000":
                m.dates.setdefault(seg.get(1), seg)
            elif seg.id == "HD" and seg.loop == "2300":
                coverage = _Coverage(hd=seg)
                m.coverages.append(coverage)
            elif seg.id == "DTP" and seg.loop == "2300" and coverage is not None:
                coverage.dates.setdefault(seg.get(1), seg)
    if members:  # no SE: still map what arrived (pyx12 reports the missing trailer)
        flush()
    return out


def _transaction(members: list[_Member], env: dict[str, str], sponsor: str, path: str, ids: MemberIds,
                 bad_lines: frozenset[int], out: Result834, report: Report) -> None:
    base = f"834:{env.get('sender', '').strip()}:{env.get('isa13', '')}:{env.get('gs06', '')}:{env.get('st02', '')}"
    try:
        occurred = _stamp(env.get("bgn_date") or env.get("gs_date", ""), env.get("bgn_time") or env.get("gs_time", ""))
    except ValueError:
        occurred = datetime(1970, 1, 1, tzinfo=UTC)
    # (account, agency, [subscriber], the subscriber id as sent)
    subscriber: tuple[str, str, list[_Member], str] | None = None
    for m in members:
        ins = m.ins
        lines = range(ins.line, max(m.last_line, ins.line) + 1)
        if any(line in bad_lines for line in lines):
            if ins.get(1) == "Y":
                subscriber = None  # its dependents cannot be placed either
            continue
        is_subscriber = ins.get(1) == "Y"
        relationship = RELATIONSHIP.get(ins.get(2), "other")
        if is_subscriber != (relationship == "self"):
            report(ins, "INS02", f"INS01={ins.get(1)} with relationship {ins.get(2)}: a subscriber is 18 (self)")
            continue
        action = MAINTENANCE.get(ins.get(3))
        if action is None:
            report(ins, "INS03", f"maintenance type {ins.get(3)!r} is not 021, 001, 024, 025 or 030")
            continue
        if ins.get(3) == "030":
            out.notices.append(f"{path}:{ins.line}: INS03=030 (audit): a change unless compared (--compare)")
        status = STATUS.get(ins.get(5))
        if status is None:
            report(ins, "INS05", f"benefit status {ins.get(5)!r} is not A, C, S or T")
            continue
        if status == "active" and ins.get(8) == "RT":
            status = "retiree"  # INS08 employment status RT: retired
        own_id = _member_id(m, ids)

        def safe(value: str) -> str:
            # REF*0F and REF*17 often carry the SSN itself: an id equal to an SSN of the file is hashed too
            return ids.pseudonym(value) if value in out.ssns else value

        if is_subscriber:
            ref0f = m.refs.get("0F")
            raw_account = ref0f.get(2) if ref0f is not None else ""
            account = safe(raw_account) if raw_account else own_id
            if not account:
                report(ins, "REF02", "subscriber has no REF*0F subscriber id and no usable NM109 member id")
                subscriber = None
                continue
            dx = m.refs.get("DX")
            agency = dx.get(2) if dx is not None and dx.get(2) else sponsor
            if not agency:
                report(ins, "REF02", "no paying agency: no REF*DX and no sponsor N1*P5")
                subscriber = None
                continue
            subscriber = (account, agency, [m], raw_account)
            member_id = account
        else:
            if subscriber is None:
                report(ins, "INS01", "dependent without a valid subscriber before it in the transaction set")
                continue
            account, agency, _, raw_account = subscriber
            ref17 = m.refs.get("17")
            ref0f = m.refs.get("0F")
            member_id = (safe(ref17.get(2)) if ref17 is not None and ref17.get(2) else
                         safe(ref0f.get(2)) if ref0f is not None and ref0f.get(2) and ref0f.get(2) != raw_account
                         else own_id or f"{account}-{m.ordinal}")
        coverages = m.coverages
        inherited = False
        if not coverages and not is_subscriber and subscriber is not None:
            coverages = subscriber[2][0].coverages
            inherited = True
        if not coverages:
            report(ins, None, "member has no coverage loop (2300 HD)")
            continue
        for number, cov in enumerate(coverages, start=1):
            event = _coverage_event(cov, m, number, base, account, agency, member_id, relationship,
                                    action, status, occurred, inherited, report)
            if event is not None:
                out.events.append(event)
                if ins.get(3) == "030" or env.get("bgn08") == "4":
                    out.audit_ids.add(event.event_id)


def _member_id(m: _Member, ids: MemberIds) -> str:
    if m.nm1 is None or not m.nm1.get(9):
        return ""
    return ids.pseudonym(m.nm1.get(9)) if m.nm1.get(8) == "34" else m.nm1.get(9)


def _coverage_event(cov: _Coverage, m: _Member, number: int, base: str, account: str, agency: str,
                    member_id: str, relationship: Relationship, action: EnrollmentAction,
                    status: CoverageStatus, occurred: datetime, inherited: bool,
                    err: Report) -> EnrollmentChanged | None:
    hd = cov.hd
    if not inherited and hd.get(1):
        hd_action = MAINTENANCE.get(hd.get(1))
        if hd_action is None:
            err(hd, "HD01", f"maintenance type {hd.get(1)!r} is not 021, 001, 024, 025 or 030")
            return None
        action = hd_action
    line = LINES.get(hd.get(3))
    if line is None:
        err(hd, "HD03", f"insurance line {hd.get(3)!r} is not one the ledger keeps"
                        f" ({', '.join(sorted(LINES))})")
        return None
    tier = hd.get(5)
    if not tier:
        err(hd, "HD05", "coverage level (tier) is missing")
        return None
    plan = hd.get(4) or hd.get(3)
    try:
        begin = _d8(cov.dates["348"].get(3)) if "348" in cov.dates else None
        end = _d8(cov.dates["349"].get(3)) if "349" in cov.dates else None
    except ValueError:
        bad = cov.dates.get("348") or cov.dates["349"]
        err(bad, "DTP03", f"{bad.get(3)!r} is not a CCYYMMDD date")
        return None
    if begin is None:
        if action in ("terminate",) and end is not None:
            eligible = m.dates.get("356")
            try:
                begin = _d8(eligible.get(3)) if eligible is not None else end
            except ValueError:
                begin = end
            begin = min(begin, end)
        else:
            err(hd, "DTP03", "no benefit begin date (DTP*348) in the coverage loop")
            return None
    if end is not None and end < begin:
        err(cov.dates["349"], "DTP03", f"benefit end {end} is before benefit begin {begin}")
        return None
    return EnrollmentChanged(
        event_id=f"{base}:{m.ordinal}:{number}",
        account_id=account,
        effective_on=end if action == "terminate" and end is not None else begin,
        occurred_at=occurred,
        source=SOURCE,
        member_id=member_id,
        relationship=relationship,
        plan=plan,
        coverage_line=line,
        tier=tier,
        action=action,
        status=status,
        benefit_begin=begin,
        benefit_end=end,
        agency_id=agency,
        reason=REASON.get(m.ins.get(4)),
    )
