"""X12 820 (005010X218) premium payment to events. Pure: segments in, events and findings out.

Per transaction set: one RemittanceReceived on the payer's account (``payer:<N1*PR id>``) and one
PaymentReceived per RMR line on the member's account. The balance checks pyx12 does not do are done
here: BPR02 = sum of RMR04, and RMR04 = RMR05 + sum of its ADX01. An imbalanced file is still
ingested; each imbalance is a ``remittance_total_mismatch`` finding with its amounts in cents.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from events.adapters.common import FileDiscrepancy, IngestError, MemberIds
from events.adapters.x12 import Seg
from events.money import AmountError, to_cents
from events.types import InputEvent, PaymentMethod, PaymentReceived, RemittanceAdjustment, RemittanceReceived

SOURCE = "x12-820"

Report = Callable[[Seg, "str | None", str], None]
METHODS: dict[str, PaymentMethod] = {"ACH": "ach", "CHK": "check", "FWT": "eft", "BOP": "eft", "SWT": "eft"}


@dataclass(slots=True)
class _Line:
    rmr: Seg
    ent: Seg | None
    nm1: Seg | None
    dtm: Seg | None = None
    adx: list[Seg] = field(default_factory=list)


@dataclass(slots=True)
class Result820:
    events: list[InputEvent] = field(default_factory=list)
    errors: list[IngestError] = field(default_factory=list)
    discrepancies: list[FileDiscrepancy] = field(default_factory=list)
    ssns: set[str] = field(default_factory=set)
    members: int = 0


def _d8(text: str) -> date:
    return datetime.strptime(text, "%Y%m%d").date()


def map_820(segs: list[Seg], path: str, ids: MemberIds, *, bad_lines: frozenset[int] = frozenset(),
            max_members: int | None = None) -> Result820:
    out = Result820()
    header: dict[str, Seg] = {}
    lines: list[_Line] = []
    ent: Seg | None = None
    nm1: Seg | None = None
    gs: Seg | None = None

    def err(seg: Seg, element: str | None, reason: str) -> None:
        out.errors.append(IngestError(file=path, reason=reason, line=seg.line, segment=seg.position or None,
                                      segment_id=seg.id, loop=seg.loop, element=element))

    for seg in segs:
        if seg.id == "GS":
            gs = seg
        elif seg.id == "ST":
            header, lines, ent, nm1 = {}, [], None, None
        elif seg.id in ("BPR", "TRN") and seg.loop == "header":
            header[seg.id] = seg
        elif seg.id == "N1" and seg.get(1) in ("PE", "PR"):
            header[f"N1*{seg.get(1)}"] = seg
        elif seg.id == "ENT":
            out.members += 1
            if max_members is not None and out.members > max_members:
                err(seg, None, f"more than {max_members} members in one file (setting ingest_max_members_per_file);"
                    " nothing of the file is ingested")
                out.events.clear()
                out.discrepancies.clear()
                return out
            ent, nm1 = seg, None
            if seg.get(3) == "34" and seg.get(4):
                out.ssns.add(seg.get(4))
        elif seg.id == "NM1" and seg.loop.startswith("2100"):
            nm1 = seg
            if seg.get(8) == "34" and seg.get(9):
                out.ssns.add(seg.get(9))
        elif seg.id == "RMR":
            lines.append(_Line(rmr=seg, ent=ent, nm1=nm1))
        elif seg.id == "DTM" and lines and seg.get(1) == "582":
            lines[-1].dtm = seg
        elif seg.id == "ADX" and lines and seg.loop.startswith("2320"):
            lines[-1].adx.append(seg)
        elif seg.id == "SE":
            _transaction(header, lines, gs, path, ids, bad_lines, out, err)
            header, lines = {}, []
    return out


def _member_account(line: _Line, ids: MemberIds) -> str:
    """NM109 unless it is an SSN, else ENT04 unless it is an SSN, else the SSN's pseudonym."""
    ssn = ""
    for seg, qual_at, id_at in ((line.nm1, 8, 9), (line.ent, 3, 4)):
        if seg is None or not seg.get(id_at):
            continue
        if seg.get(qual_at) == "34":
            ssn = ssn or seg.get(id_at)
            continue
        return seg.get(id_at)
    return ids.pseudonym(ssn) if ssn else ""


def _transaction(header: dict[str, Seg], lines: list[_Line], gs: Seg | None, path: str, ids: MemberIds,
                 bad_lines: frozenset[int], out: Result820, report: Report) -> None:
    bpr, trn = header.get("BPR"), header.get("TRN")
    payer_seg, payee_seg = header.get("N1*PR"), header.get("N1*PE")
    if bpr is None or trn is None or payer_seg is None:
        missing = [n for n, s in (("BPR", bpr), ("TRN", trn), ("N1*PR", payer_seg)) if s is None]
        anchor = bpr or trn or payer_seg or (lines[0].rmr if lines else gs)
        if anchor is not None:
            report(anchor, None, f"transaction set without {', '.join(missing)}: nothing from it is ingested")
        return
    if bpr.line in bad_lines or trn.line in bad_lines:
        return  # pyx12's error on the header is reported; without it no line can be placed
    trace = trn.get(2)
    payer_id = payer_seg.get(4) or payer_seg.get(2)
    payee_id = (payee_seg.get(4) or payee_seg.get(2)) if payee_seg is not None else None
    method = METHODS.get(bpr.get(4))
    if method is None:
        report(bpr, "BPR04", f"payment method {bpr.get(4)!r} is not one of {', '.join(METHODS)}")
        return
    try:
        total = to_cents(bpr.get(2))
    except AmountError as exc:
        report(bpr, "BPR02", str(exc))
        return
    try:
        paid_on = _d8(bpr.get(16))
    except ValueError:
        report(bpr, "BPR16", f"payment date {bpr.get(16)!r} is not a CCYYMMDD date")
        return
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
                report(rmr, "RMR04", str(exc))
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
            report(rmr, "RMR05", str(exc))
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
        account = _member_account(line, ids)
        if not account:
            report(rmr, None, "no member id: the remittance line has no ENT or NM1 identifier")
            continue
        if paid <= 0:
            report(rmr, "RMR04", f"paid amount {rmr.get(4)} is not positive: not a payment")
            continue
        month = None
        if line.dtm is not None:
            start = line.dtm.get(6).split("-")[0] if line.dtm.get(5) == "RD8" else line.dtm.get(2)
            try:
                month = _d8(start).replace(day=1)
            except ValueError:
                report(line.dtm, "DTM06" if line.dtm.get(5) == "RD8" else "DTM02",
                       f"coverage period {start!r} is not a CCYYMMDD date")
                continue
        out.events.append(PaymentReceived(
            event_id=f"{base}:{number}", account_id=account, effective_on=paid_on, occurred_at=occurred,
            source=SOURCE, payment_id=f"{trace}-{number}", coverage_month=month, amount_cents=paid,
            method=method, payer_id=payer_id, remittance_id=trace, trace_number=trace,
            billed_cents=billed, adjustments=tuple(adjustment_lines),
        ))
    if total != lines_total:
        out.discrepancies.append(FileDiscrepancy(
            kind="remittance_total_mismatch", expected_cents=lines_total, actual_cents=total,
            reason=f"BPR02 {total} cents != sum of {counted} RMR04 lines {lines_total} cents",
            file=path, line=bpr.line, segment_id="BPR", loop=bpr.loop, remittance_id=trace, trace_number=trace,
        ))
    out.events.append(RemittanceReceived(
        event_id=f"{base}:remittance", account_id=f"payer:{payer_id}", effective_on=paid_on,
        occurred_at=occurred, source=SOURCE, remittance_id=trace, payer_id=payer_id, payee_id=payee_id,
        method=method, payment_date=paid_on, trace_number=trace, total_cents=total,
        lines_total_cents=lines_total, line_count=counted,
    ))
