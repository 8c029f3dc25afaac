"""X12 820 (005010X218) premium payment to events. Pure: segments in, events and findings out.

Per transaction set: one RemittanceReceived on the payer's account (``payer:<N1*PR id>``) and one
PaymentReceived per RMR line and covered month on the member's account.

Money or advice (BPR01, transaction handling code): C (payment accompanies remittance advice), D (make
payment only) and X (handling party's option to split payment and remittance) move money with the
remittance. I (remittance information only), U (split payment and remittance: the money travels on
its own) and P (prenotification of future transfers, a test of the account setup) move none, and
neither does BPR04 NON (non-payment data): such a remittance and all its lines are ``advice_only``,
matched by the ledger against the payment that moves the money (same TRN02 trace), never cash.
BPR04, payment method: ACH ach, CHK check, FWT (wire), BOP (financial institution option) and SWT
(SWIFT) eft, NON none.

Balance checks pyx12 does not do: BPR02 = sum of RMR04 + sum of the remittance-level ADX01 (2200A
organization and 2200B individual adjustments for a previous payment, which belong to no line), and
RMR04 = RMR05 + sum of the line's ADX01 (2320A/2320B, adjustments for the current payment). An
imbalanced file is still ingested; each imbalance is a ``remittance_total_mismatch`` finding with its
amounts in cents.

A line's amount may be negative (a take-back: the payer recovers money paid earlier for that member
and month); a line of zero is refused. Its coverage period is the line's DTM (582, or AAG: both
qualifiers of the guide's "coverage period" segment; DTM06 an RD8 range or DTM02 a date), else the
header DTM*582. A period spanning several months (the months from its first day's to its last day's,
at most ``PERIOD_MONTHS_MAX``) gives one PaymentReceived per month, the amount split exactly in
integer cents: equal parts, the remainder cents one each to the earliest months (100.00 over three
months: 33.34, 33.33, 33.33; -10.00: -3.34, -3.33, -3.33). RMR05 and each ADX01 are split the same
way (a month whose part of an adjustment is zero does not list it). Event ids:
``820:<payer>:<trace>:<line>``, and ``...:<line>:<YYYY-MM>`` per month of a period of several months.

RMR01 says what RMR02 identifies. Only the qualifiers that name a policy fill the line's coverage:
IG (insurance policy number) and 1L (group or policy number, organization level) the ``plan``, AZ
(health insurance policy number) the plan and coverage line ``health``, B7 (life insurance policy
number) the plan and ``life``. The others (11 account number, 9J pension contract, CT contract
number, ID insurance certificate number, IK invoice number, KW certification) identify an account, a
member's contract or certificate or a bill, not a plan: plan and coverage line stay None.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from events.adapters.common import FileDiscrepancy, IngestError, MemberIds, split_exactly
from events.adapters.x12 import Seg
from events.money import AmountError, to_cents
from events.types import (
    CoverageLine,
    InputEvent,
    PaymentMethod,
    PaymentReceived,
    RemittanceAdjustment,
    RemittanceReceived,
)

SOURCE = "x12-820"
GUIDE = "005010X218"

Report = Callable[..., None]
# BPR04 payment method code
METHODS: dict[str, PaymentMethod] = {
    "ACH": "ach", "CHK": "check", "FWT": "eft", "BOP": "eft", "SWT": "eft", "NON": "none",
}
# BPR01 transaction handling code: does money move with this remittance?
HANDLING: dict[str, bool] = {"C": True, "D": True, "X": True, "I": False, "U": False, "P": False}
# RMR01 qualifiers whose RMR02 names the policy, and the coverage line when the qualifier says it
POLICY_QUALIFIERS: dict[str, CoverageLine | None] = {"IG": None, "1L": None, "AZ": "health", "B7": "life"}
PERIOD_QUALIFIERS = ("582", "AAG")
PERIOD_MONTHS_MAX = 60


@dataclass(slots=True)
class _Line:
    rmr: Seg
    ent: Seg | None
    nm1: Seg | None
    dtm: Seg | None = None
    adx: list[Seg] = field(default_factory=list)


@dataclass(slots=True)
class _RemittanceAdjustment:
    adx: Seg
    ent: Seg | None
    nm1: Seg | None


@dataclass(slots=True)
class Result820:
    events: list[InputEvent] = field(default_factory=list)
    errors: list[IngestError] = field(default_factory=list)
    discrepancies: list[FileDiscrepancy] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    ssns: set[str] = field(default_factory=set)
    members: int = 0
    accepted: dict[int, int] = field(default_factory=dict)  # ST line -> events published from it


def _d8(text: str) -> date:
    return datetime.strptime(text, "%Y%m%d").date()


def map_820(segs: list[Seg], path: str, ids: MemberIds, *, bad_lines: frozenset[int] = frozenset(),
            max_members: int | None = None) -> Result820:
    out = Result820()
    header: dict[str, Seg] = {}
    lines: list[_Line] = []
    remit_adx: list[_RemittanceAdjustment] = []
    ent: Seg | None = None
    nm1: Seg | None = None
    gs: Seg | None = None
    st: Seg | None = None

    def err(seg: Seg, element: str | None, reason: str, code: str | None = None) -> None:
        out.errors.append(IngestError(file=path, reason=reason, line=seg.line, segment=seg.position or None,
                                      segment_id=seg.id, loop=seg.loop, element=element,
                                      code=code or ("I12" if element else "8")))

    def unterminated(at: Seg) -> None:
        err(at, None, f"transaction set ST02={at.get(2)} has no SE trailer (the file is cut short or an SE is"
            " missing): nothing of it is ingested", "2")

    for seg in segs:
        if seg.id == "GS":
            gs = seg
        elif seg.id == "ST":
            if st is not None:
                unterminated(st)
            st = seg
            header, lines, remit_adx, ent, nm1 = {}, [], [], None, None
        elif seg.id in ("BPR", "TRN") and seg.loop == "header":
            header[seg.id] = seg
        elif seg.id == "DTM" and seg.loop == "header" and seg.get(1) == "582":
            header["DTM*582"] = seg
        elif seg.id == "N1" and seg.get(1) in ("PE", "PR"):
            header[f"N1*{seg.get(1)}"] = seg
        elif seg.id == "ENT":
            out.members += 1
            if max_members is not None and out.members > max_members:
                err(seg, None, f"more than {max_members} members in one file (setting ingest_max_members_per_file);"
                    " nothing of the file is ingested")
                out.events.clear()
                out.discrepancies.clear()
                out.accepted.clear()
                return out
            ent, nm1 = seg, None
            if seg.get(3) == "34" and seg.get(4):
                out.ssns.add(seg.get(4))
        elif seg.id == "NM1" and seg.loop.startswith("2100"):
            nm1 = seg
            if seg.get(8) == "34" and seg.get(9):
                out.ssns.add(seg.get(9))
        elif seg.id == "ADX" and seg.loop in ("2200A", "2200B"):
            remit_adx.append(_RemittanceAdjustment(adx=seg, ent=ent, nm1=nm1 if seg.loop == "2200B" else None))
        elif seg.id == "RMR":
            lines.append(_Line(rmr=seg, ent=ent, nm1=nm1))
        elif seg.id == "DTM" and lines and seg.loop.startswith("2300") and seg.get(1) in PERIOD_QUALIFIERS:
            lines[-1].dtm = seg
        elif seg.id == "ADX" and lines and seg.loop.startswith("2320"):
            lines[-1].adx.append(seg)
        elif seg.id == "SE":
            if st is not None:
                before = len(out.events)
                _transaction(header, lines, remit_adx, gs, path, ids, bad_lines, out, err)
                out.accepted[st.line] = len(out.events) - before
            st = None
            header, lines, remit_adx = {}, [], []
    if st is not None:
        unterminated(st)
    return out


def _member_account(ent: Seg | None, nm1: Seg | None, ids: MemberIds) -> str:
    """NM109 unless it is an SSN, else ENT04 unless it is an SSN, else the SSN's pseudonym."""
    ssn = ""
    for seg, qual_at, id_at in ((nm1, 8, 9), (ent, 3, 4)):
        if seg is None or not seg.get(id_at):
            continue
        if seg.get(qual_at) == "34":
            ssn = ssn or seg.get(id_at)
            continue
        return seg.get(id_at)
    return ids.pseudonym(ssn) if ssn else ""


def _months(first: date, last: date) -> list[date]:
    months = []
    month = first.replace(day=1)
    while month <= last:
        months.append(month)
        month = date(month.year + month.month // 12, month.month % 12 + 1, 1)
    return months


def _period(dtm: Seg, report: Report) -> list[date] | None:
    """The months a coverage period DTM covers; None (reported) when it cannot be read."""
    if dtm.get(5) == "RD8":
        element, text = "DTM06", dtm.get(6)
        first_text, _, last_text = text.partition("-")
    else:
        element, text = "DTM02", dtm.get(2)
        first_text = last_text = text
    try:
        first, last = _d8(first_text), _d8(last_text or first_text)
    except ValueError:
        report(dtm, element, f"coverage period {text!r} is not a CCYYMMDD date or CCYYMMDD-CCYYMMDD range", "8")
        return None
    if last < first:
        report(dtm, element, f"coverage period {text!r} ends before it begins", "8")
        return None
    months = _months(first, last)
    if len(months) > PERIOD_MONTHS_MAX:
        report(dtm, element, f"coverage period {text!r} spans {len(months)} months, more than the"
               f" {PERIOD_MONTHS_MAX} a remittance line may pay")
        return None
    return months


def _transaction(header: dict[str, Seg], lines: list[_Line], remit_adx: list[_RemittanceAdjustment],
                 gs: Seg | None, path: str, ids: MemberIds, bad_lines: frozenset[int], out: Result820,
                 report: Report) -> None:
    bpr, trn = header.get("BPR"), header.get("TRN")
    payer_seg, payee_seg = header.get("N1*PR"), header.get("N1*PE")
    if bpr is None or trn is None or payer_seg is None:
        missing = [n for n, s in (("BPR", bpr), ("TRN", trn), ("N1*PR", payer_seg)) if s is None]
        anchor = bpr or trn or payer_seg or (lines[0].rmr if lines else gs)
        if anchor is not None:
            report(anchor, None, f"transaction set without {', '.join(missing)}: nothing from it is ingested", "I6")
        return
    if bpr.line in bad_lines or trn.line in bad_lines:
        return  # pyx12's error on the header is reported; without it no line can be placed
    trace = trn.get(2)
    payer_id = payer_seg.get(4) or payer_seg.get(2)
    payee_id = (payee_seg.get(4) or payee_seg.get(2)) if payee_seg is not None else None
    method = METHODS.get(bpr.get(4))
    if method is None:
        report(bpr, "BPR04", f"payment method {bpr.get(4)!r} is not in the BPR04 payment method code list of"
               f" {GUIDE} ({', '.join(sorted(METHODS))})", "7")
        return
    moves_money = HANDLING.get(bpr.get(1))
    if moves_money is None:
        report(bpr, "BPR01", f"transaction handling code {bpr.get(1)!r} is not in the BPR01 code list of {GUIDE}"
               f" ({', '.join(sorted(HANDLING))})", "7")
        return
    advice = not moves_money or method == "none"
    try:
        total = to_cents(bpr.get(2))
    except AmountError as exc:
        report(bpr, "BPR02", str(exc), "6")
        return
    try:
        paid_on = _d8(bpr.get(16))
    except ValueError:
        report(bpr, "BPR16", f"payment date {bpr.get(16)!r} is not a CCYYMMDD date", "8")
        return
    if bpr.get(1) == "P":
        out.notices.append(f"{path}:{bpr.line}: BPR01=P (prenotification of future transfers): a test of the"
                           f" payee's account setup; remittance {trace} moves no money and is advice only")
    elif bpr.get(1) == "D" and lines:
        out.notices.append(f"{path}:{bpr.line}: BPR01=D (make payment only) with {len(lines)} remittance lines:"
                           " the money moves with this remittance and the lines say whose premium it pays")
    header_months = _period(header["DTM*582"], report) if "DTM*582" in header else None
    occurred = datetime(paid_on.year, paid_on.month, paid_on.day, tzinfo=UTC)
    base = f"820:{payer_id}:{trace}"
    lines_total = 0
    counted = 0
    for number, line in enumerate(lines, start=1):
        rmr = line.rmr
        try:
            paid = to_cents(rmr.get(4))
        except AmountError as exc:
            if rmr.line not in bad_lines:
                report(rmr, "RMR04", str(exc), "6")
            continue
        lines_total += paid
        counted += 1
        billed = None
        adjustments = 0
        adjustment_lines: list[RemittanceAdjustment] = []
        try:
            if rmr.get(5):
                billed = to_cents(rmr.get(5))
            for adx in line.adx:
                amount = to_cents(adx.get(1))
                adjustments += amount
                adjustment_lines.append(RemittanceAdjustment(amount_cents=amount, reason=adx.get(2) or ""))
        except AmountError as exc:
            report(rmr, "RMR05", str(exc), "6")
            billed = None
        if billed is not None and paid != billed + adjustments:
            out.discrepancies.append(FileDiscrepancy(
                kind="remittance_total_mismatch", expected_cents=billed + adjustments, actual_cents=paid,
                reason=f"line {number}: RMR04 {paid} cents != RMR05 {billed} + ADX01 {adjustments} cents",
                file=path, line=rmr.line, segment_id="RMR", loop=rmr.loop, remittance_id=trace,
                trace_number=trace, remittance_line=number,
            ))
        if any(s.line in bad_lines for s in (rmr, *line.adx, *(x for x in (line.dtm,) if x is not None))):
            continue
        account = _member_account(line.ent, line.nm1, ids)
        if not account:
            report(rmr, None, "no member id: the remittance line has no ENT or NM1 identifier", "I6")
            continue
        if paid == 0:
            report(rmr, "RMR04", f"paid amount {rmr.get(4)} is zero: a line that neither pays nor takes money back"
                   " is not a payment")
            continue
        months: list[date | None]
        if line.dtm is not None:
            period = _period(line.dtm, report)
            if period is None:
                continue
            months = list(period)
        else:
            months = list(header_months) if header_months else [None]
        parts = split_exactly(paid, len(months))
        if 0 in parts:
            report(rmr, "RMR04", f"paid amount {rmr.get(4)} cannot be split over the {len(months)} months of its"
                   " coverage period in whole cents without a month of zero")
            continue
        billed_parts = split_exactly(billed, len(months)) if billed is not None else [None] * len(months)
        adjustment_parts = [split_exactly(a.amount_cents, len(months)) for a in adjustment_lines]
        qualifier, reference = rmr.get(1), rmr.get(2)
        named = qualifier in POLICY_QUALIFIERS and bool(reference) and reference not in out.ssns
        plan = reference if named else None
        coverage_line = POLICY_QUALIFIERS.get(qualifier) if named else None
        for i, month in enumerate(months):
            several = len(months) > 1 and month is not None
            suffix = f":{month:%Y-%m}" if several and month is not None else ""
            out.events.append(PaymentReceived(
                event_id=f"{base}:{number}{suffix}", account_id=account, effective_on=paid_on, occurred_at=occurred,
                source=SOURCE,
                payment_id=f"{trace}-{number}" + (f"-{month:%Y%m}" if several and month is not None else ""),
                coverage_month=month, amount_cents=parts[i], method=method, payer_id=payer_id,
                remittance_id=trace, trace_number=trace, billed_cents=billed_parts[i],
                adjustments=tuple(RemittanceAdjustment(amount_cents=split[i], reason=a.reason)
                                  for a, split in zip(adjustment_lines, adjustment_parts, strict=True)
                                  if split[i] or len(months) == 1),
                advice_only=advice, plan=plan, coverage_line=coverage_line,
            ))
    remittance_adjustments: list[RemittanceAdjustment] = []
    for item in remit_adx:
        try:
            amount = to_cents(item.adx.get(1))
        except AmountError as exc:
            if item.adx.line not in bad_lines:
                report(item.adx, "ADX01", str(exc), "6")
            continue
        remittance_adjustments.append(RemittanceAdjustment(
            amount_cents=amount, reason=item.adx.get(2) or "",
            account_id=(_member_account(item.ent, item.nm1, ids) or None) if item.adx.loop == "2200B" else None))
    adjusted = sum(a.amount_cents for a in remittance_adjustments)
    if total != lines_total + adjusted:
        with_adx = f" + {len(remittance_adjustments)} remittance-level ADX01 {adjusted} cents" if remit_adx else ""
        out.discrepancies.append(FileDiscrepancy(
            kind="remittance_total_mismatch", expected_cents=lines_total + adjusted, actual_cents=total,
            reason=f"BPR02 {total} cents != sum of {counted} RMR04 lines {lines_total} cents{with_adx}",
            file=path, line=bpr.line, segment_id="BPR", loop=bpr.loop, remittance_id=trace, trace_number=trace,
        ))
    out.events.append(RemittanceReceived(
        event_id=f"{base}:remittance", account_id=f"payer:{payer_id}", effective_on=paid_on,
        occurred_at=occurred, source=SOURCE, remittance_id=trace, payer_id=payer_id, payee_id=payee_id,
        method=method, payment_date=paid_on, trace_number=trace, total_cents=total,
        lines_total_cents=lines_total, line_count=counted, advice_only=advice,
        adjustments=tuple(remittance_adjustments),
    ))
