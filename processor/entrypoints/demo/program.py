"""The program generator: members, coverage, rates, bills and payments, month by month.

Deterministic for a seed. It emits the program as phases in business order (rates and enrollment,
then billing, then the previous month's day closing, then payments, then flexible spending accounts;
the last month's day closing and a final one after every grace period) and records every
discrepancy it injected (injections.py) as (kind, account_id, coverage_month) with the status each of
its rows must end in. Bills are priced by the demo's own model of the rules (model.py) from what HR
has sent so far, so a bill differs from the rules only where an error is injected.

Families match their tiers (EMP: the subscriber; ESP: a spouse or domestic partner; ECH: children;
FAM: a partner and children), and when HR changes a tier the dependents' coverage follows in the same
834, except where an eligibility error is injected. Direct payments (retirees, COBRA) arrive early in
the month; agencies remit a month's premiums with their last payroll of the month, two days before its
end, so a remittance is judged by the lines the ledger posted from it (README, "remittance_total_mismatch")
once they are all in, or on the first business day after payment date + remittance_lines_days.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta

from events.types import (
    BROADCAST_ACCOUNT,
    BillingCycleClosed,
    DayClosed,
    EnrollmentChanged,
    Event,
    PaymentReceived,
    PremiumBilled,
    RatePublished,
    RemittanceReceived,
)
from processor.entrypoints.demo import injections
from processor.entrypoints.demo.fsa import fsa_program
from processor.entrypoints.demo.model import LEDGER, PAYER_PREFIX, Model, add_months, last_day
from processor.entrypoints.demo.records import TIERS, Coverage, Dependent, Expected, Member, Program, ProgramTooSmall
from processor.settings import PlanSettings

SOURCE = "demo-generator"

# plan -> (coverage line, monthly total by tier in cents for the first half year, employer share percent)
PLANS: dict[str, tuple[str, dict[str, int], int]] = {
    "UMP-CLASSIC": ("health", {"EMP": 78_412, "ESP": 154_380, "ECH": 136_105, "FAM": 211_963}, 85),
    "KP-WA-VALUE": ("health", {"EMP": 70_118, "ESP": 138_070, "ECH": 121_781, "FAM": 189_633}, 85),
    "DELTA-PPO": ("dental", {"EMP": 6_450, "ESP": 12_900, "ECH": 12_255, "FAM": 18_705}, 100),
    "VSP-VISION": ("vision", {"EMP": 1_212, "ESP": 2_121, "ECH": 2_169, "FAM": 3_398}, 100),
}
RENEWAL_INCREASE_PERCENT = 6
FSA_SHARE = 0.10  # of the subscribers: active employees with a health and/or dependent-care FSA election
MID_MONTH_SHARE = 0.5  # of later hires, ordinary terminations and tier changes: on a day after the 1st
CHILDREN_AGE_MAX = 20  # ordinary children stay far below the health plan's age limit of 26
REMIT_DAYS_BEFORE_END = 2  # an agency remits the month's premiums two days before the month ends


def remitted_on(month: date) -> date:
    """The day an agency's remittance for the month is paid (its lines' date and BPR16)."""
    return last_day(month) - timedelta(days=REMIT_DAYS_BEFORE_END)


def rate(plan: str, tier: str, month: date, renewal: date) -> tuple[int, int, int]:
    """(total, employee, employer) cents of the rate table the program publishes."""
    _line, totals, employer_pct = PLANS[plan]
    total = totals[tier]
    if month >= renewal:
        total = total * (100 + RENEWAL_INCREASE_PERCENT) // 100
    employer = total * employer_pct // 100
    return total, total - employer, employer


class Builder:
    """The program being generated: the population, its life events, the injected errors, and the
    events of each month (see ``generate``)."""

    def __init__(self, members: int, months: int, seed: int, start: date, rules: PlanSettings,
                 first_member: int = 0) -> None:
        if members < 20 or months < 3:
            raise ProgramTooSmall("the demo needs at least 20 members and 3 months to place every injected error")
        if first_member < 0:
            raise ValueError("first_member must be at least 0")
        self.members, self.months, self.seed, self.start, self.rules = members, months, seed, start, rules
        self.first_member = first_member
        self.rng = random.Random(seed)
        self.end = add_months(start, months)
        self.renewal = add_months(start, months // 2)
        # a part of n >= 20 members names max(3, n // 150) <= n // 6 agencies: consecutive parts share none
        first_agency = first_member // 6 + 1
        self.agencies = [f"AG-{i:03d}" for i in range(first_agency, first_agency + max(3, members // 150))]
        self.per_kind = max(1, members * months // 1500)
        self._seq = 0
        # what HR has sent so far, priced as the rules say: the bills
        self.pricing = Model(rules)
        self.people: list[Member] = []
        self.ends: dict[str, date] = {}  # account -> last covered day of an ordinary or injected termination
        self.ended: set[str] = set()  # accounts whose termination was sent
        self.tier_change: dict[str, tuple[date, str]] = {}  # account -> (effective day, new tier)
        self.injections: dict[tuple[str, date], str] = {}  # (account, month) -> the kind injected there
        self.retro: dict[tuple[str, date], injections.Retro] = {}  # changes reported after the month was billed
        self.partner_accounts: set[str] = set()
        self.remit_errors: set[tuple[str, date]] = set()
        self.misdirected: dict[tuple[str, date], str] = {}  # (account, month) -> the mistyped member id
        self.expected: set[Expected] = set()
        self.rows: dict[Expected, list[tuple[str, str | None]]] = {}  # (final status, closing event) per row
        self.close_on_termination: dict[str, Expected] = {}  # account -> the finding its termination closes
        self.retro_changes: dict[tuple[str, date], str] = {}
        self.scheduled: dict[date, list[Event]] = {}  # a later month's payments: refunds, cash applications
        self.scheduled_bills: dict[date, list[Event]] = {}  # a later month's billing: corrections
        self.billed: dict[tuple[str, date], dict[str, int]] = {}  # (account, month) -> line -> billed
        self.paid: dict[tuple[str, date], int] = {}
        self.refunds_seen = 0
        self.derived_payments = 0
        self.phases: list[tuple[str, list[Event]]] = []
        self.day_close: tuple[str, list[Event]] | None = None  # the last month's, published after the next billing
        # the injections of injections.py beyond one kind on one month (see there), by account
        self.special: dict[str, injections.Special] = {}

    # -- helpers --------------------------------------------------------------------------------

    def eid(self, prefix: str) -> str:
        self._seq += 1
        return f"demo-{self.seed}-{prefix}-{self._seq:07d}"

    def at(self, day: date, hour: int = 9) -> datetime:
        return datetime.combine(day, time(hour, self.rng.randrange(60)), UTC)

    def taken(self) -> set[str]:
        """Accounts that carry an injected error (no other may be placed on them)."""
        return ({a for a, _ in self.injections} | {a for a, _ in self.retro} | self.partner_accounts
                | set(self.special) | {a for a, _ in self.misdirected})

    def expect(self, found: Expected, rows: list[tuple[str, str | None]] | None = None) -> None:
        """A finding the ledger must record; ``rows``: (final status, the event that closes it) of each of
        its discrepancy rows, by default one row left open."""
        self.expected.add(found)
        if rows is not None:
            self.rows[found] = rows

    def covered(self, p: Member) -> list[date]:
        """The months billed to the member (and paid in full unless an error is injected)."""
        end = self.ends.get(p.account_id)
        return [m for m in (add_months(self.start, i) for i in range(self.months))
                if p.hired <= m and (end is None or m <= end)]

    def enrollment(self, p: Member, prefix: str, action: str, line: str, cov: Coverage, *, sent_on: date,
                   effective_on: date, begin: date, end: date | None = None,
                   dependent: Dependent | None = None, sent_at: datetime | None = None) -> EnrollmentChanged:
        """One EnrollmentChanged of the subscriber, or of a dependent; HR's view of the coverage (the
        pricing model) moves with it. ``sent_at``: the time of the file it came in."""
        event_id = self.eid(prefix)  # ids, then times: the order the seeded generator draws in
        member, relationship, tax_dependent, birth = p.account_id, "self", True, None
        if dependent is not None:
            member, birth = f"{p.account_id}-D{dependent.number}", dependent.birth_date
            relationship = "child" if dependent.kind == "child" else "spouse"
            if dependent.kind == "partner" and p.account_id in self.partner_accounts:
                relationship, tax_dependent = "domestic_partner", False
        event = EnrollmentChanged(
            event_id=event_id, account_id=p.account_id, effective_on=effective_on,
            occurred_at=sent_at or self.at(sent_on), source="hr-system", member_id=member,
            relationship=relationship, plan=cov.plan, coverage_line=line,  # type: ignore[arg-type]
            tier=cov.tier, action=action, status=p.status,  # type: ignore[arg-type]
            benefit_begin=begin, benefit_end=end, agency_id=p.agency_id, tax_dependent=tax_dependent,
            elected_on=p.elected_on, cobra_start=p.hired if p.status == "cobra" else None, birth_date=birth,
        )
        self.pricing.apply(event)
        return event

    def dependent_event(self, p: Member, d: Dependent, prefix: str, action: str, *, sent_on: date,
                        sent_at: datetime | None = None) -> EnrollmentChanged:
        """A dependent's health coverage added (from ``d.begin``) or ended (after ``d.end``)."""
        health = p.coverages["health"]
        begin = d.begin or health.begin
        effective = begin if action == "add" else d.end
        assert effective is not None
        return self.enrollment(p, prefix, action, "health", health, sent_on=sent_on, effective_on=effective,
                               begin=begin, end=d.end if action == "terminate" else None, dependent=d,
                               sent_at=sent_at)

    def hire(self, p: Member, sent_on: date, prefix: str = "enr") -> list[EnrollmentChanged]:
        """HR's 834 adding a member: the dependents first, then the subscriber's lines, so that no coverage
        month ever shows a tier without the people it covers."""
        sent_at = self.at(sent_on)
        events = [self.dependent_event(p, d, "dep", "add", sent_on=sent_on, sent_at=sent_at)
                  for d in p.covered_family]
        events += [self.enrollment(p, prefix, "add", line, cov, sent_on=sent_on, effective_on=p.begins,
                                   begin=p.begins, sent_at=sent_at) for line, cov in sorted(p.coverages.items())]
        injections.hired(self, p, events)
        return events

    def terminate(self, p: Member, ended: date, sent_on: date, lines: tuple[str, ...] | None = None,
                  prefix: str = "term") -> list[EnrollmentChanged]:
        """HR ends the member's coverage (``lines``: only those) after ``ended``, in one 834: the
        subscriber's lines first, then the dependents' health coverage (so that no month still priced
        shows a tier without its people)."""
        lines = tuple(sorted(p.coverages)) if lines is None else lines
        sent_at = self.at(sent_on)
        events = [self.enrollment(p, prefix, "terminate", line, p.coverages[line], sent_on=sent_on,
                                  effective_on=ended, begin=p.coverages[line].begin, end=ended, sent_at=sent_at)
                  for line in sorted(lines)]
        if "health" in lines:
            for d in p.covered_family:
                d.end = ended
                events.append(self.dependent_event(p, d, prefix, "terminate", sent_on=sent_on, sent_at=sent_at))
        return events

    def change_tier(self, p: Member, effective: date, tier: str, sent_on: date, prefix: str = "chg",
                    family_follows: bool = True) -> list[EnrollmentChanged]:
        """The subscriber's tier changes on every line from ``effective`` on, in one 834, and (unless an
        eligibility error is injected) the family follows: the dependents the new tier does not cover
        end the day before, the ones it needs join (a new spouse, a newborn). In that order, so that the
        tier always matches who is covered, even while a retroactive change is folded event by event."""
        sent_at = self.at(sent_on)
        leaving, joining = self.refamily(p, tier, effective) if family_follows else ([], [])
        events = [self.dependent_event(p, d, prefix, "terminate", sent_on=sent_on, sent_at=sent_at) for d in leaving]
        for line, cov in sorted(p.coverages.items()):
            cov.tier = tier
            events.append(self.enrollment(p, prefix, "change", line, cov, sent_on=sent_on, effective_on=effective,
                                          begin=effective, sent_at=sent_at))
        events += [self.dependent_event(p, d, prefix, "add", sent_on=sent_on, sent_at=sent_at) for d in joining]
        return events

    def refamily(self, p: Member, tier: str, day: date) -> tuple[list[Dependent], list[Dependent]]:
        """Who leaves and who joins so that the family fits ``tier`` from ``day`` on (both recorded)."""
        partner, children = p.partner(), p.children()
        leaving = {"EMP": [*children, *([partner] if partner else [])], "ESP": children,
                   "ECH": [partner] if partner else [], "FAM": []}[tier]
        for d in leaving:
            d.end = day - timedelta(days=1)
        joining = []
        if tier in ("ESP", "FAM") and partner is None:
            joining.append(self.dependent(p, "partner", day))
        if tier in ("ECH", "FAM") and not children:
            joining.append(self.dependent(p, "child", day))  # a newborn
        return leaving, joining

    def dependent(self, p: Member, kind: str, begin: date | None = None) -> Dependent:
        """A new member of the family: a partner of 25 to 60, a child of up to CHILDREN_AGE_MAX (a newborn
        when joining later)."""
        on = begin or self.start
        if kind == "partner":
            born = on - timedelta(days=self.rng.randrange(25 * 365, 60 * 365))
        elif begin is None:
            born = on - timedelta(days=self.rng.randrange(0, CHILDREN_AGE_MAX * 365))
        else:
            born = on - timedelta(days=self.rng.randrange(0, 28))
        d = Dependent(number=len(p.family) + 1, kind=kind, birth_date=born, begin=begin)
        p.family.append(d)
        return d

    # -- the population ------------------------------------------------------------------------

    def population(self) -> None:
        """Most start in the first month, some are hired later (half of them after the 1st of a month)."""
        rng = self.rng
        for i in range(self.members):
            later = rng.random() >= 0.85
            hired = add_months(self.start, rng.randrange(1, self.months)) if later else self.start
            tier = rng.choices(list(TIERS), weights=[45, 20, 15, 20])[0]
            begin_day = rng.randint(2, 28) if later and rng.random() < MID_MONTH_SHARE else 1
            begins = hired.replace(day=begin_day)
            covs = {"health": Coverage(rng.choice(["UMP-CLASSIC", "KP-WA-VALUE"]), tier, begins)}
            if rng.random() < 0.6:
                covs["dental"] = Coverage("DELTA-PPO", tier, begins)
            if rng.random() < 0.35:
                covs["vision"] = Coverage("VSP-VISION", tier, begins)
            retiree = rng.random() < 0.06
            p = Member(
                account_id=f"M{self.seed % 100:02d}{self.first_member + i:06d}", agency_id=rng.choice(self.agencies),
                direct_pay=retiree, status="retiree" if retiree else "active", hired=hired, coverages=covs,
                begin_day=begin_day,
            )
            # the family the tier covers: EMP none, ESP a partner, ECH 1-3 children, FAM a partner and 1-3
            kinds = {"EMP": [], "ESP": ["partner"], "ECH": ["child"] * rng.randint(1, 3),
                     "FAM": ["partner"] + ["child"] * rng.randint(1, 3)}[tier]
            for kind in kinds:
                self.dependent(p, kind)
            self.people.append(p)

    def life_events(self) -> None:
        """Ordinary life events (not errors): terminations and tier changes, half of them within a month."""
        rng = self.rng
        for p in self.people:
            r = rng.random()
            first_possible = add_months(p.hired, 2)
            if first_possible >= self.end:
                continue
            month = add_months(first_possible, rng.randrange(max(1, self.months - 2)))
            if month >= self.end:
                continue
            within = rng.random() < MID_MONTH_SHARE
            day = rng.randint(5, 25)
            if r < 0.05:
                # coverage ends the day before the month, or on a day within it
                self.ends[p.account_id] = month + timedelta(days=day - 1) if within else month - timedelta(days=1)
            elif r < 0.10:
                new_tier = rng.choice([t for t in TIERS if t != p.coverages["health"].tier])
                self.tier_change[p.account_id] = (month + timedelta(days=day - 1) if within else month, new_tier)

    # -- one month -----------------------------------------------------------------------------

    def rates(self, month: date) -> list[Event]:
        out: list[Event] = []
        if month != self.start and month != self.renewal:
            return out
        for plan_id, (_line, totals, _pct) in PLANS.items():
            for tier in totals:
                total, ee, er = rate(plan_id, tier, month, self.renewal)
                event = RatePublished(
                    event_id=self.eid("rate"), account_id=BROADCAST_ACCOUNT, effective_on=month,
                    occurred_at=self.at(month - timedelta(days=20)), source="rates-admin",
                    rate_id=f"{plan_id}-{tier}-{month:%Y%m}", plan=plan_id, tier=tier, month_from=month,
                    month_through=None if month >= self.renewal else last_day(add_months(self.renewal, -1)),
                    total_cents=total, employee_cents=ee, employer_cents=er,
                )
                self.pricing.apply(event)
                out.append(event)
        return out

    def enrollment_changes(self, month: date) -> list[Event]:
        """What HR sends before the month: new hires, terminations, tier changes."""
        sends = {"add": month - timedelta(days=12), "terminate": month - timedelta(days=5),
                 "change": month - timedelta(days=8)}
        out: list[Event] = []
        for p in self.people:
            out.extend(injections.hr_before(self, p, month, sends))
            if p.hired == month and not injections.hired_late(self, p):
                out.extend(self.hire(p, sends["add"]))
            ended = self.ends.get(p.account_id)
            if ended is not None and (ended + timedelta(days=1)).replace(day=1) == month and (
                    p.account_id not in self.ended):
                self.ended.add(p.account_id)
                terminations = self.terminate(p, ended, sends["terminate"])
                out.extend(terminations)
                closed = self.close_on_termination.pop(p.account_id, None)
                if closed is not None:  # the subscriber's last line ended closes it
                    last = [e for e in terminations if e.relationship == "self"][-1]
                    self.rows[closed] = [("resolved", last.event_id)]
            change = self.tier_change.get(p.account_id)
            if change is not None and change[0].replace(day=1) == month:
                out.extend(self.change_tier(p, change[0], change[1], sends["change"]))
        return out

    def bill(self, p: Member, month: date, bills: list[Event]) -> int | None:
        """The member's bills for the month as billing sends them (and those of earlier months billing
        catches up on); the month's total, or None if nothing is billed."""
        for missed in injections.catch_up_months(self, p, month):
            first = len(bills)
            self.post_bills(p, missed, self.pricing.bills_due(p.account_id, missed), bills, due_on=month)
            injections.caught_up(self, p, missed, bills[first].event_id)
        inject = self.injections.get((p.account_id, month))
        due = injections.billing(self, p, month, inject, self.pricing.bills_due(p.account_id, month))
        return self.post_bills(p, month, due, bills, due_on=month)

    def post_bills(self, p: Member, month: date, due: list[tuple[str, str, str, int]], bills: list[Event], *,
                   due_on: date) -> int | None:
        if not due:
            return None
        lines = self.billed.setdefault((p.account_id, month), {})
        for line, plan_id, tier, amount in due:
            assert line not in lines, f"two plans of {line} billed in {month} for {p.account_id}"
            bills.append(PremiumBilled(
                event_id=self.eid("bill"), account_id=p.account_id, effective_on=due_on,
                occurred_at=self.at(due_on - timedelta(days=15)), source="billing-system",
                bill_id=f"B{month:%Y%m}-{p.account_id}-{line}", coverage_month=month, plan=plan_id,
                tier=tier, amount_cents=amount, due_on=due_on, agency_id=None if p.direct_pay else p.agency_id,
            ))
            lines[line] = amount
        return sum(lines.values())

    def pay(self, p: Member, month: date, billed: int | None, payments: list[Event], trace: str) -> None:
        """The member's payment for the month (payroll's remittance line, or the member's own)."""
        inject = self.injections.get((p.account_id, month))
        pay = injections.payment(self, p, month, inject, billed)
        if pay is None or pay <= 0:
            return
        self.paid[(p.account_id, month)] = pay
        typo = injections.misdirect(self, p, month, pay)  # "": the line names no month
        unmonthed = typo == "" or injections.pays_unmonthed(self, p, month)
        line = self.payment_line(p, month, pay, trace, account_id=typo or p.account_id, unmonthed=unmonthed,
                                 pre_tax_error=inject == "tax_treatment")
        payments.append(line)
        payments.extend(injections.after_payment(self, p, month, inject, line))

    def payment_line(self, p: Member, month: date, pay: int, trace: str | None, *, account_id: str | None = None,
                     unmonthed: bool = False, pre_tax_error: bool = False, suffix: str = "",
                     paid_in: date | None = None) -> PaymentReceived:
        """The payer's line for the member's month, paid in month ``paid_in`` (default: that month):
        payroll's remittance line (two days before the month ends), or the member's own payment (early
        in the month)."""
        account_id = account_id or p.account_id
        paid_in = paid_in or month
        paid_on = paid_in + timedelta(days=4) if p.direct_pay else remitted_on(paid_in)
        return PaymentReceived(
            event_id=self.eid("pay"), account_id=account_id, effective_on=paid_on,
            occurred_at=self.at(paid_on, 14), source="bank-820" if not p.direct_pay else "member-portal",
            payment_id=f"P{month:%Y%m}-{account_id}{suffix}", coverage_month=None if unmonthed else month,
            amount_cents=pay, method="direct" if p.direct_pay else "payroll",
            payer_id=p.account_id if p.direct_pay else p.agency_id,
            remittance_id=None if p.direct_pay else f"R{paid_in:%Y%m}-{p.agency_id}",
            trace_number=f"DIR{month:%Y%m}{p.account_id}" if p.direct_pay else trace,
            tax_treatment=None if p.direct_pay else (
                # a non-dependent partner's share is post-tax in the months that price the partner; the
                # injected error takes it pre-tax
                "post_tax" if self.pricing.prices_partner(p.account_id, month) and not pre_tax_error else "pre_tax"
            ),
        )

    def remittances(self, month: date, payments: list[Event], traces: dict[str, str]) -> list[Event]:
        """One remittance per agency: the payment (BPR02) and the sum of its lines (RMR04)."""
        out: list[Event] = []
        for agency in self.agencies:
            remittance_id = f"R{month:%Y%m}-{agency}"
            lines = [e for e in payments if isinstance(e, PaymentReceived) and e.remittance_id == remittance_id]
            if not lines:
                continue
            lines_total = sum(e.amount_cents for e in lines)
            total = lines_total + (self.rng.randrange(1_000, 50_000) if (agency, month) in self.remit_errors else 0)
            if total != lines_total:
                self.expect(("remittance_total_mismatch", f"{PAYER_PREFIX}{agency}", None))
            paid_on = remitted_on(month)
            out.append(RemittanceReceived(
                event_id=self.eid("remit"), account_id=f"{PAYER_PREFIX}{agency}", effective_on=paid_on,
                occurred_at=self.at(paid_on, 16), source="bank-820", remittance_id=remittance_id, payer_id=agency,
                method="ach", payment_date=paid_on, trace_number=traces[agency], total_cents=total,
                lines_total_cents=lines_total, line_count=len(lines),
            ))
        return out

    def month(self, mi: int, fsa_by_month: dict[date, list[Event]]) -> None:
        month = add_months(self.start, mi)
        month_end = last_day(month)
        setup = self.rates(month) + self.enrollment_changes(month)
        bills: list[Event] = list(self.scheduled_bills.pop(month, []))  # corrections of earlier months first
        payments: list[Event] = []
        late: list[Event] = []  # retroactive changes, reported after the month's payments
        traces = {a: f"TRN{month:%Y%m}{a[-3:]}{self.rng.randrange(10**6):06d}" for a in self.agencies}
        for p in self.people:
            if p.hired > month:
                continue
            billed = self.bill(p, month, bills)
            self.pay(p, month, billed, payments, traces[p.agency_id])
            payments.extend(injections.catch_up_payments(self, p, month, traces[p.agency_id]))
            late.extend(injections.late_change(self, p, month))
            late.extend(injections.hr_late(self, p, month))
        payments.extend(injections.strangers(self, mi, month, traces))
        payments.extend(self.remittances(month, payments, traces))
        payments.extend(self.scheduled.pop(month, []))
        payments.extend(late)
        bills.append(BillingCycleClosed(
            event_id=self.eid("cycle"), account_id=BROADCAST_ACCOUNT, effective_on=month,
            occurred_at=self.at(month - timedelta(days=1), 22), source="billing-system", cycle_month=month,
        ))
        close = DayClosed(
            event_id=self.eid("day"), account_id=BROADCAST_ACCOUNT, effective_on=month_end,
            occurred_at=self.at(month_end, 23), source="operations", business_date=month_end,
        )
        # The month's business day closes after the next month's enrollment and billing (sent and closed
        # before it, as their times say) and before that month's payments: the program's phases follow
        # business time, and the publisher can run ahead of the processor (see run.py).
        self.phases += [(f"{month:%Y-%m} rates and enrollment", setup), (f"{month:%Y-%m} billing", bills)]
        if self.day_close is not None:
            self.phases.append(self.day_close)
        self.phases += [(f"{month:%Y-%m} payments", payments),
                        (f"{month:%Y-%m} flexible spending accounts", fsa_by_month.get(month, []))]
        self.day_close = (f"{month:%Y-%m} day close", [close])

    # -- the whole program ---------------------------------------------------------------------

    def build(self) -> Program:
        self.population()
        self.life_events()
        injections.choose(self)
        # Flexible spending accounts of active payroll employees who carry no injected premium error.
        taken = self.taken()
        candidates = [p for p in self.people if p.status == "active" and not p.direct_pay
                      and p.account_id not in taken and p.account_id not in self.ends]
        participants = self.rng.sample(candidates, k=min(len(candidates), max(3, round(self.members * FSA_SHARE))))
        participants.sort(key=lambda p: p.account_id)
        fsa_by_month, claims = fsa_program(participants, self.start, self.months, self.per_kind, self.rules.fsa,
                                           self.rng, self.eid, self.at)
        for mi in range(self.months):
            self.month(mi, fsa_by_month)

        assert self.day_close is not None
        self.phases.append(self.day_close)
        # One last business day after every grace period has run out.
        final_day = self.end + timedelta(days=45)
        self.phases.append(("final day close", [DayClosed(
            event_id=self.eid("day"), account_id=BROADCAST_ACCOUNT, effective_on=final_day,
            occurred_at=self.at(final_day, 23), source="operations", business_date=final_day,
        )]))

        # A few things upstream systems really do: resend events unchanged, send garbage.
        # Resends repeat payments already published (before the middle phase, where the demo sends them).
        all_payments = [e for name, evs in self.phases[: len(self.phases) // 2] if name.endswith("payments")
                        for e in evs]
        events = [e for _, evs in self.phases for e in evs]
        enrolled = {(e.account_id, e.member_id) for e in events if isinstance(e, EnrollmentChanged)
                    and e.action == "add"}
        program = Program(phases=self.phases, expected=self.expected,
                          members=len(enrolled), accounts=len({a for a, _ in enrolled}),
                          months=self.months, claims=claims, derived_payments=self.derived_payments,
                          derived_lines=sum(1 for e in events if isinstance(e, PaymentReceived)
                                            and e.remittance_id is not None and e.source != LEDGER
                                            and not e.account_id.startswith(PAYER_PREFIX)),
                          retro_changes=self.retro_changes, plan=self.rules)
        program.expected_rows = Counter(
            (*found, status) for found in self.expected for status, _ in self.rows.get(found, [("open", None)]))
        for found, rows in self.rows.items():
            for status, closer in rows:
                if closer is not None:
                    program.closed_by.setdefault((*found, status), []).append(closer)
        program.exact_duplicates = self.rng.sample(all_payments, k=min(5, len(all_payments)))
        program.raw_records = [
            ("payments", b"M-garbage", b"{not json"),
            ("billing", b"M-garbage", b'{"type":"premium_billed","event_id":"bad-1","account_id":"M-garbage"}'),
            ("payments", b"M-garbage", b'{"type":"no_such_event","event_id":"bad-2","account_id":"M-garbage"}'),
        ]
        return program


def generate(members: int, months: int, seed: int, start: date = date(2026, 1, 1),
             plan: PlanSettings | None = None, first_member: int = 0) -> Program:
    """The whole program: every event, in business order, plus the injected discrepancies.

    ``plan`` (default: the default plan settings) gives the pricing (proration, coverage start, the COBRA
    premium percent) and the COBRA shortfall limits, so the program's bills and shortfalls follow the
    ledger's rules. ``first_member`` (default 0) numbers the members from there (accounts
    ``M<seed % 100><number:06d>``) and the agencies from ``first_member // 6 + 1``: parts of a larger
    program generated over consecutive member ranges, each with a seed of its own (event ids and unknown
    payers carry the seed), share no account, agency, remittance or event id (bench/replay.py builds a
    large archive so, a part at a time); their broadcast events (rates, cycle and day closes) are the same
    program's and are kept from one part only."""
    return Builder(members, months, seed, start, plan or PlanSettings(), first_member).build()
