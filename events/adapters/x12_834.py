"""X12 834 (005010X220A1) benefit enrollment to EnrollmentChanged events. Pure: segments in, events out.

One event per member coverage loop (2300 HD). A dependent sent without 2300 loops is covered by the
coverages of its subscriber in the same transaction set (one event each). Dependents go on their
subscriber's account (REF*0F of the subscriber). Member ids never carry an SSN: when NM108 is 34 the
id is replaced through MemberIds.

Codes, each as the guide means it (the tables below): INS03/HD01 maintenance type, INS02 relationship,
INS04 maintenance reason, INS05 benefit status, HD03 insurance line. An HD loop with HD01 032
(employee information not applicable) says the subscriber is not covered by it: no event for the
subscriber, while dependents without loops of their own are still covered by it. HD01 002 (delete)
removes the coverage: a termination whose last day is DTP*349, else the day before its benefit begin.

Situational elements: HD04 absent: the plan is the HD03 code. REF*DX absent: the agency is the sponsor
(N1*P5). HD05 (coverage level) absent: the tier another HD loop of the subscriber's family says for the
same coverage (HD03, HD04), else the tier derived from the people the transaction set covers under
that subscriber for that coverage, when the transaction set states the whole enrollment (the
subscriber's INS03 is 021 add or 030 audit, or BGN08 is 4, a full file): subscriber alone EMP, with a
spouse or partner ESP, with children ECH, with both FAM. Else ``tier`` is None and
``missing_elements`` names the HD05 and where it was missing (a termination needs no tier).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

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
GUIDE = "005010X220A1"

Report = Callable[..., None]

# INS03 maintenance type code
MAINTENANCE: dict[str, EnrollmentAction] = {
    "021": "add", "001": "change", "024": "terminate", "025": "reinstate",
    "030": "change",  # audit or compare: restates the member's terms (see notices)
}
# HD01 adds 002 delete (removes the coverage), 026 correction (restates the terms) and 032
# employee information not applicable (the subscriber is not covered by the loop: no event)
HD_MAINTENANCE: dict[str, EnrollmentAction | None] = {
    **MAINTENANCE, "002": "terminate", "026": "change", "032": None,
}
# INS02 individual relationship code. Children for the tier: child, adopted, foster and step child;
# every other relative or dependent (parent, grandchild, ward, ex-spouse, sponsored, collateral...)
# is "other".
RELATIONSHIP: dict[str, Relationship] = {
    "18": "self", "01": "spouse", "53": "domestic_partner",
    "19": "child", "09": "child", "10": "child", "17": "child",
    **{code: "other" for code in ("03", "04", "05", "06", "07", "08", "11", "12", "13", "14", "15", "16", "23",
                                  "24", "25", "26", "31", "38", "60", "D2", "G8", "G9")},
}
# INS05 benefit status: A active, C COBRA; S (surviving insured) and T (TEFRA) are not terminations.
STATUS: dict[str, CoverageStatus] = {"A": "active", "C": "cobra", "S": "active", "T": "active"}
# INS04 maintenance reason code, as the event's reason. The ledger acts on "death" (03); the others
# are kept for who reads the events.
REASON: dict[str, str] = {
    "01": "divorce", "02": "birth", "03": "death", "04": "retirement", "05": "adoption", "06": "strike",
    "07": "termination_of_benefits", "08": "termination_of_employment", "09": "cobra", "10": "cobra_premium_paid",
    "11": "surviving_spouse", "14": "voluntary_withdrawal", "15": "primary_care_provider_change", "16": "quit",
    "17": "fired", "18": "suspended", "20": "active", "21": "disability", "22": "plan_change",
    "25": "change_in_identifying_data_elements", "26": "declined_coverage", "27": "pre_enrollment",
    "28": "initial_enrollment", "29": "benefit_selection", "31": "legal_separation", "32": "marriage",
    "33": "personnel_data", "37": "leave_of_absence_with_benefits", "38": "leave_of_absence_without_benefits",
    "39": "lay_off_with_benefits", "40": "lay_off_without_benefits", "41": "re_enrollment",
    "43": "change_of_location", "59": "non_payment", "AA": "dissatisfaction_with_office_staff",
    "AB": "dissatisfaction_with_medical_care", "AC": "inconvenient_office_location",
    "AD": "dissatisfaction_with_office_hours", "AE": "unable_to_schedule_appointments",
    "AF": "dissatisfaction_with_referral_policy", "AG": "less_respect_and_attention",
    "AH": "moved_to_a_new_location", "AI": "no_reason_given", "AJ": "appointment_times_not_met",
    "AL": "algorithm_assigned_benefit_selection", "EC": "member_benefit_selection", "XN": "notification_only",
    "XT": "transfer",
}
# HD03 insurance line code: every code of the guide's list
LINES: dict[str, CoverageLine] = {
    "HLT": "health", "HMO": "health", "PPO": "health", "EPO": "health", "POS": "health", "MM": "health",
    "PDG": "health", "MOD": "health", "AK": "health", "AG": "health", "AH": "health", "AJ": "health",
    "FAC": "health", "PRA": "health", "HE": "health", "UR": "health",
    "DEN": "dental", "DCP": "dental", "VIS": "vision", "LTD": "ltd", "STD": "std", "LTC": "ltc",
}
# The four tiers a family's make-up gives (the codes the samples and the plan's rates use)
TIER_ALONE, TIER_PARTNER, TIER_CHILDREN, TIER_FAMILY = "EMP", "ESP", "ECH", "FAM"


def _codes(table: Mapping[str, object]) -> str:
    return ", ".join(sorted(table))


@dataclass(slots=True)
class _Coverage:
    hd: Seg
    dates: dict[str, Seg] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return self.hd.get(3), self.hd.get(4)


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
    accepted: dict[int, int] = field(default_factory=dict)  # ST line -> events published from it


def _d8(text: str) -> date:
    return datetime.strptime(text, "%Y%m%d").date()


def _dtp(seg: Seg, last: bool = False) -> date:
    """DTP03 as a date: D8, or the first (``last``: the last) date of an RD8 range."""
    text = seg.get(3)
    if seg.get(2) == "RD8":
        first, _, end = text.partition("-")
        return _d8(end if last else first)
    return _d8(text)


def _stamp(d: str, t: str) -> datetime:
    t = (t or "0000")[:4].ljust(4, "0")
    return datetime.strptime(d + t, "%Y%m%d%H%M").replace(tzinfo=UTC)


def map_834(segs: list[Seg], path: str, ids: MemberIds, *, bad_lines: frozenset[int] = frozenset(),
            max_members: int | None = None) -> Result834:
    """Events of every transaction set in the interchange. Members with a line in ``bad_lines`` (pyx12
    found an error there) are rejected whole; the error is already reported. A transaction set without
    its SE trailer is not mapped at all."""
    out = Result834()
    env: dict[str, str] = {}
    sponsor = ""
    members: list[_Member] = []
    coverage: _Coverage | None = None
    st: Seg | None = None

    def err(seg: Seg, element: str | None, reason: str, code: str | None = None) -> None:
        out.errors.append(IngestError(file=path, reason=reason, line=seg.line, segment=seg.position or None,
                                      segment_id=seg.id, loop=seg.loop, element=element,
                                      code=code or ("I12" if element else "8")))

    def unterminated(at: Seg) -> None:
        err(at, None, f"transaction set ST02={at.get(2)} has no SE trailer (the file is cut short or an SE is"
            f" missing): none of its {len(members)} members is ingested", "2")

    for seg in segs:
        if seg.id == "ISA":
            env["sender"], env["isa13"] = seg.get(6), seg.get(13)
        elif seg.id == "GS":
            env["gs06"], env["gs_date"], env["gs_time"] = seg.get(6), seg.get(4), seg.get(5)
        elif seg.id == "ST":
            if st is not None:
                unterminated(st)
            st = seg
            env["st02"] = seg.get(2)
            env.pop("bgn08", None)
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
                out.accepted.clear()
                return out
            members.append(_Member(ins=seg, ordinal=len(members) + 1))
            coverage = None
        elif seg.id == "SE":
            if st is not None:
                before = len(out.events)
                _transaction(members, env, sponsor, path, ids, bad_lines, out, err)
                out.accepted[st.line] = len(out.events) - before
            st = None
            members.clear()
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
    if st is not None:
        unterminated(st)
    return out


@dataclass(slots=True)
class _Family:
    """A subscriber and the dependents after it in one transaction set, for deriving an absent tier."""

    subscriber: _Member
    dependents: list[_Member] = field(default_factory=list)
    whole: bool = False  # the transaction set states this family's whole enrollment

    def stated_tier(self, key: tuple[str, str]) -> str | None:
        """An HD05 another loop of the family sends for the same coverage, the subscriber's first."""
        for m in (self.subscriber, *self.dependents):
            for c in m.coverages:
                if c.key == key and c.hd.get(5):
                    return c.hd.get(5)
        return None

    def derived_tier(self, key: tuple[str, str]) -> tuple[str, int] | None:
        """The tier the covered people give, and how many they are; None when it cannot be told."""
        if not self.whole:
            return None
        own = [c for c in self.subscriber.coverages if c.key == key]
        if not own or any(c.hd.get(1) == "032" for c in own):
            return None  # the subscriber is not covered by it: a dependents-only level no make-up tells
        partners = children = 0
        for d in self.dependents:
            if d.coverages and not any(c.key == key for c in d.coverages):
                continue  # covered by other coverages only
            relationship = RELATIONSHIP.get(d.ins.get(2))
            if relationship in ("spouse", "domestic_partner"):
                partners += 1
            elif relationship == "child":
                children += 1
            else:
                return None  # another relative: which level covers them is the plan's
        tier = (TIER_FAMILY if partners and children else TIER_PARTNER if partners
                else TIER_CHILDREN if children else TIER_ALONE)
        return tier, 1 + partners + children


def _families(members: list[_Member], full_file: bool) -> dict[int, _Family]:
    """Each member's family, by the member's ordinal."""
    out: dict[int, _Family] = {}
    family: _Family | None = None
    for m in members:
        if m.ins.get(1) == "Y":
            family = _Family(subscriber=m, whole=full_file or m.ins.get(3) in ("021", "030"))
        elif family is not None:
            family.dependents.append(m)
        if family is not None:
            out[m.ordinal] = family
    return out


def _transaction(members: list[_Member], env: dict[str, str], sponsor: str, path: str, ids: MemberIds,
                 bad_lines: frozenset[int], out: Result834, report: Report) -> None:
    base = f"834:{env.get('sender', '').strip()}:{env.get('isa13', '')}:{env.get('gs06', '')}:{env.get('st02', '')}"
    try:
        occurred = _stamp(env.get("bgn_date") or env.get("gs_date", ""), env.get("bgn_time") or env.get("gs_time", ""))
    except ValueError:
        occurred = datetime(1970, 1, 1, tzinfo=UTC)
    families = _families(members, env.get("bgn08") == "4")
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
        relationship = RELATIONSHIP.get(ins.get(2))
        if relationship is None:
            report(ins, "INS02", f"individual relationship code {ins.get(2)!r} is not in the INS02 code list of"
                   f" {GUIDE} ({_codes(RELATIONSHIP)})", "7")
            if is_subscriber:
                subscriber = None
            continue
        if is_subscriber != (relationship == "self"):
            report(ins, "INS02", f"INS01={ins.get(1)} with individual relationship code {ins.get(2)}: a subscriber"
                   " (INS01=Y) is 18 (self), a dependent (INS01=N) is not")
            if is_subscriber:
                subscriber = None
            continue
        action = MAINTENANCE.get(ins.get(3))
        if action is None:
            report(ins, "INS03", f"maintenance type {ins.get(3)!r} is not in the INS03 code list of {GUIDE}"
                   f" ({_codes(MAINTENANCE)})", "7")
            continue
        if ins.get(3) == "030":
            out.notices.append(f"{path}:{ins.line}: INS03=030 (audit): a change unless compared (--compare)")
        status = STATUS.get(ins.get(5))
        if status is None:
            report(ins, "INS05", f"benefit status {ins.get(5)!r} is not in the INS05 code list of {GUIDE}"
                   f" ({_codes(STATUS)})", "7")
            continue
        if status == "active" and ins.get(8) == "RT":
            status = "retiree"  # INS08 employment status RT: retired
        reason = REASON.get(ins.get(4)) if ins.get(4) else None
        if ins.get(4) and reason is None:
            report(ins, "INS04", f"maintenance reason {ins.get(4)!r} is not in the INS04 code list of {GUIDE}", "7")
            continue
        own_id = _member_id(m, ids)

        def safe(value: str) -> str:
            # REF*0F and REF*17 often carry the SSN itself: an id equal to an SSN of the file is hashed too
            return ids.pseudonym(value) if value in out.ssns else value

        if is_subscriber:
            ref0f = m.refs.get("0F")
            raw_account = ref0f.get(2) if ref0f is not None else ""
            account = safe(raw_account) if raw_account else own_id
            if not account:
                report(ins, "REF02", "subscriber has no REF*0F subscriber id and no usable NM109 member id", "I9")
                subscriber = None
                continue
            dx = m.refs.get("DX")
            agency = dx.get(2) if dx is not None and dx.get(2) else sponsor
            if not agency:
                report(ins, "REF02", "no paying agency: no REF*DX and no sponsor N1*P5", "I9")
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
            report(ins, None, "member has no coverage loop (2300 HD)", "I6")
            continue
        for number, cov in enumerate(coverages, start=1):
            if not inherited and cov.hd.get(1) == "032":
                out.notices.append(
                    f"{path}:{cov.hd.line}: HD01=032 (employee information not applicable): member {member_id} is"
                    f" not covered by {cov.hd.get(3)} {cov.hd.get(4)}; it covers the dependents sent with it")
                continue
            event = _coverage_event(cov, m, number, base, account, agency, member_id, relationship,
                                    action, status, reason, occurred, inherited, families.get(m.ordinal), path,
                                    out.notices, report)
            if event is not None:
                out.events.append(event)
                if ins.get(3) == "030" or env.get("bgn08") == "4":
                    out.audit_ids.add(event.event_id)


def _member_id(m: _Member, ids: MemberIds) -> str:
    if m.nm1 is None or not m.nm1.get(9):
        return ""
    return ids.pseudonym(m.nm1.get(9)) if m.nm1.get(8) == "34" else m.nm1.get(9)


def _tier(cov: _Coverage, family: _Family | None, action: EnrollmentAction, account: str, path: str,
          notices: list[str]) -> tuple[str | None, tuple[str, ...]]:
    """HD05, else the tier the family gives (with a notice saying so), else None and the marker."""
    hd = cov.hd
    if hd.get(5):
        return hd.get(5), ()
    where = f"HD05 (file {os.path.basename(path)}, line {hd.line}, segment {hd.position})"
    if family is not None:
        stated = family.stated_tier(cov.key)
        if stated is not None:
            notices.append(f"{path}:{hd.line}: {where} absent: tier {stated} from another coverage loop of the"
                           f" subscriber's family for {hd.get(3)} {hd.get(4)}".rstrip())
            return stated, ()
        derived = family.derived_tier(cov.key)
        if derived is not None:
            tier, people = derived
            who = "the subscriber alone" if people == 1 else f"the {people} people"
            notices.append(f"{path}:{hd.line}: {where} absent: tier {tier} derived from {who} the transaction set"
                           f" covers under subscriber {account} for {hd.get(3)} {hd.get(4)}".rstrip())
            return tier, ()
    if action == "terminate":
        return None, ()  # ending a coverage needs no tier
    return None, (where,)


def _coverage_event(cov: _Coverage, m: _Member, number: int, base: str, account: str, agency: str,
                    member_id: str, relationship: Relationship, action: EnrollmentAction,
                    status: CoverageStatus, reason: str | None, occurred: datetime, inherited: bool,
                    family: _Family | None, path: str, notices: list[str], err: Report) -> EnrollmentChanged | None:
    hd = cov.hd
    deleted = False
    if not inherited and hd.get(1):
        if hd.get(1) not in HD_MAINTENANCE:
            err(hd, "HD01", f"maintenance type {hd.get(1)!r} is not in the HD01 code list of {GUIDE}"
                f" ({_codes(HD_MAINTENANCE)})", "7")
            return None
        hd_action = HD_MAINTENANCE[hd.get(1)]
        assert hd_action is not None, "032 loops are skipped before"
        action, deleted = hd_action, hd.get(1) == "002"
    line = LINES.get(hd.get(3))
    if line is None:
        err(hd, "HD03", f"insurance line {hd.get(3)!r} is not in the HD03 code list of {GUIDE}"
                        f" ({_codes(LINES)})", "7")
        return None
    tier, missing = _tier(cov, family, action, account, path, notices)
    plan = hd.get(4) or hd.get(3)
    try:
        begin = _dtp(cov.dates["348"]) if "348" in cov.dates else None
        end = _dtp(cov.dates["349"], last=True) if "349" in cov.dates else None
        if end is None and "348" in cov.dates and cov.dates["348"].get(2) == "RD8":
            end = _dtp(cov.dates["348"], last=True)  # a benefit period sent as a range ends with it
    except ValueError:
        bad = cov.dates.get("348") or cov.dates["349"]
        err(bad, "DTP03", f"{bad.get(3)!r} is not a CCYYMMDD date (D8) or CCYYMMDD-CCYYMMDD range (RD8)", "8")
        return None
    if deleted and end is None and begin is not None:
        begin = end = begin - timedelta(days=1)  # removed from its first day: the coverage never was
    if begin is None:
        if action in ("terminate",) and end is not None:
            eligible = m.dates.get("356")
            try:
                begin = _d8(eligible.get(3)) if eligible is not None else end
            except ValueError:
                begin = end
            begin = min(begin, end)
        else:
            err(hd, "DTP03", "no benefit begin date (DTP*348) in the coverage loop", "I6")
            return None
    if end is not None and end < begin:
        err(cov.dates["349"], "DTP03", f"benefit end {end} is before benefit begin {begin}", "8")
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
        reason=reason,
        missing_elements=missing,
    )
