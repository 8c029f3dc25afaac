"""A realistic synthetic benefits program with known injected errors, and the demo that runs it.

The generator is deterministic for a seed. It emits the program as phases in business order (rates and
enrollment, then billing, then payments, then the day closing), and records every discrepancy it
injected as (kind, account_id, coverage_month), so the demo can count what was missed and what was
found without being injected.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

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
from processor.app import run_services
from processor.fold import last_day
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
INJECTED_KINDS = (
    "underpaid",
    "overpaid",
    "billed_not_enrolled",
    "wrong_rate",
    "unmatched_payment",
    "paid_after_termination",
    "duplicate_payment",
    "missing_payment",
    "retroactive_change",
    "enrolled_not_billed",
    "tax_treatment",
    "refund_due",
    "remittance_total_mismatch",
    "cobra_shortfall",
)
COBRA_SHARE = 0.04  # of the population: former employees and dependents on COBRA continuation coverage
Expected = tuple[str, str, date]


@dataclass
class Program:
    phases: list[tuple[str, list[Event]]]
    expected: set[Expected]
    members: int
    accounts: int
    months: int
    raw_records: list[tuple[str, bytes | None, bytes | None]] = field(default_factory=list)  # (topic key, k, v)
    exact_duplicates: list[Event] = field(default_factory=list)

    @property
    def events(self) -> int:
        return sum(len(p) for _, p in self.phases)


@dataclass
class _Coverage:
    plan: str
    tier: str
    begin: date


@dataclass
class _Member:
    account_id: str
    agency_id: str
    direct_pay: bool
    status: str
    hired: date  # first covered month (for COBRA, the first month of continuation coverage)
    coverages: dict[str, _Coverage]  # coverage line -> coverage
    terminated_after: date | None = None  # last covered day
    dependents: int = 0
    elected_on: date | None = None  # COBRA election, before HR sends the enrollment


def _elect_cobra(p: _Member, rng: random.Random) -> None:
    """Make a member a COBRA continuation member: pays the 102% premium directly, elected a few weeks
    before continuation coverage began (and before HR sent the enrollment, 12 days before)."""
    p.status, p.direct_pay = "cobra", True
    p.elected_on = p.hired - timedelta(days=12 + rng.randrange(30))


def _add_months(d: date, n: int) -> date:
    y, m = divmod(d.month - 1 + n, 12)
    return date(d.year + y, m + 1, 1)


def _rate(plan: str, tier: str, month: date, renewal: date) -> tuple[int, int, int]:
    _line, totals, employer_pct = PLANS[plan]
    total = totals[tier]
    if month >= renewal:
        total = total * (100 + RENEWAL_INCREASE_PERCENT) // 100
    employer = total * employer_pct // 100
    return total, total - employer, employer


def _cobra_premium(total: int, plan: PlanSettings) -> int:
    """A COBRA month's premium for one coverage: cobra_premium_percent (102) of the plan cost, rounded
    half up to the cent, as processor/fold.py segment_premium prices it (no disability extensions here)."""
    return (total * plan.cobra_premium_percent + 50) // 100


def generate(members: int, months: int, seed: int, start: date = date(2026, 1, 1),
             plan: PlanSettings | None = None) -> Program:
    """The whole program: every event, in business order, plus the injected discrepancies.

    ``plan`` (default: the default plan settings) gives the COBRA premium percent and the COBRA
    shortfall limits, so the program's bills and shortfalls match the ledger's rules."""
    if members < 20 or months < 3:
        raise ValueError("the demo needs at least 20 members and 3 months to place every injected error")
    rules = plan or PlanSettings()
    rng = random.Random(seed)
    renewal = _add_months(start, months // 2)
    n_agencies = max(3, members // 150)
    agencies = [f"AG-{i:03d}" for i in range(1, n_agencies + 1)]
    seq = 0

    def eid(prefix: str) -> str:
        nonlocal seq
        seq += 1
        return f"demo-{seed}-{prefix}-{seq:07d}"

    def at(day: date, hour: int = 9) -> datetime:
        return datetime.combine(day, time(hour, rng.randrange(60)), UTC)

    # The population: most start in the first month, some are hired later in the year.
    people: list[_Member] = []
    for i in range(members):
        hired = start if rng.random() < 0.85 else _add_months(start, rng.randrange(1, months))
        tier = rng.choices(["EMP", "ESP", "ECH", "FAM"], weights=[45, 20, 15, 20])[0]
        covs = {"health": _Coverage(rng.choice(["UMP-CLASSIC", "KP-WA-VALUE"]), tier, hired)}
        if rng.random() < 0.6:
            covs["dental"] = _Coverage("DELTA-PPO", tier, hired)
        if rng.random() < 0.35:
            covs["vision"] = _Coverage("VSP-VISION", tier, hired)
        retiree = rng.random() < 0.06
        people.append(_Member(
            account_id=f"M{seed % 100:02d}{i:06d}", agency_id=rng.choice(agencies), direct_pay=retiree,
            status="retiree" if retiree else "active", hired=hired, coverages=covs,
            dependents={"EMP": 0, "ESP": 1, "ECH": rng.randint(1, 3), "FAM": rng.randint(2, 4)}[tier],
        ))

    # Ordinary life events (not errors): terminations, tier changes at the start of a month.
    term_month: dict[str, date] = {}
    tier_change: dict[str, tuple[date, str]] = {}
    for p in people:
        r = rng.random()
        first_possible = _add_months(p.hired, 2)
        if first_possible >= _add_months(start, months):
            continue
        month = _add_months(first_possible, rng.randrange(max(1, months - 2)))
        if month >= _add_months(start, months):
            continue
        if r < 0.05:
            term_month[p.account_id] = month  # coverage ends the day before
        elif r < 0.10:
            new_tier = rng.choice([t for t in ("EMP", "ESP", "ECH", "FAM") if t != p.coverages["health"].tier])
            tier_change[p.account_id] = (month, new_tier)

    # Choose the injected errors on distinct (account, month) cells of steadily enrolled members.
    per_kind = max(1, members * months // 1500)
    steady = [p for p in people if p.hired == start and p.account_id not in term_month
              and p.account_id not in tier_change]
    rng.shuffle(steady)
    injections: dict[tuple[str, date], str] = {}
    cursor = 0
    for kind in INJECTED_KINDS:
        if kind in ("unmatched_payment", "remittance_total_mismatch"):
            continue
        if kind == "cobra_shortfall":
            continue  # placed below, once the COBRA members are chosen
        placed = 0
        while placed < per_kind:
            if cursor >= len(steady):
                raise ValueError("not enough members to place the injected errors; raise --members")
            p = steady[cursor]
            cursor += 1
            if kind == "paid_after_termination" and p.direct_pay:
                continue
            if kind == "tax_treatment" and (p.direct_pay or p.dependents == 0):
                continue  # a payroll deduction for coverage that includes a partner
            # month 1..months-2 so that a following month exists (termination, missing-payment deadline)
            month = _add_months(start, rng.randrange(1, months - 1))
            injections[(p.account_id, month)] = kind
            if kind in ("paid_after_termination", "billed_not_enrolled"):
                term_month[p.account_id] = month
            if kind == "refund_due":
                term_month[p.account_id] = _add_months(month, 1)  # coverage ends with the overpaid month
            placed += 1

    # Members whose first dependent is a domestic partner who is not a tax dependent: the injected
    # tax-treatment errors, and as many again whose payroll gets it right.
    partner_accounts = {a for (a, _), kind in injections.items() if kind == "tax_treatment"}
    partner_accounts |= {p.account_id for p in steady[cursor:cursor + len(partner_accounts)] if p.dependents}

    # COBRA continuation members: a small share of the members who carry no other injected error (a small
    # underpayment of theirs would be a COBRA shortfall, not underpaid), later starts, tier changes and
    # ordinary terminations included. A few of them pay one month a little short: the COBRA shortfalls.
    end = _add_months(start, months)

    def covered(p: _Member) -> list[date]:
        """The months billed to the member (and paid in full unless an error is injected)."""
        last = term_month.get(p.account_id, end)
        return [m for m in (_add_months(start, i) for i in range(months)) if p.hired <= m < last]

    taken = {a for a, _ in injections} | partner_accounts
    eligible = [p for p in people if p.status == "active" and p.account_id not in taken and covered(p)]
    if len(eligible) < per_kind:
        raise ValueError("not enough members to place the injected errors; raise --members")
    cobra = rng.sample(eligible, k=min(len(eligible), max(per_kind, round(members * COBRA_SHARE))))
    for p in cobra:
        _elect_cobra(p, rng)
    for p in cobra[:per_kind]:
        injections[(p.account_id, rng.choice(covered(p)))] = "cobra_shortfall"
    # Agency remittances whose payment total is not the sum of their lines, one per agency at most.
    remit_errors = {(a, _add_months(start, rng.randrange(months)))
                    for a in rng.sample(agencies, k=min(per_kind, len(agencies)))}
    expected: set[Expected] = set()
    phases: list[tuple[str, list[Event]]] = []
    remit_seq = 0

    for mi in range(months):
        month = _add_months(start, mi)
        month_end = last_day(month)
        setup: list[Event] = []
        bills: list[Event] = []
        payments: list[Event] = []

        if mi == 0 or month == renewal:
            for plan_id, (_line, totals, _pct) in PLANS.items():
                for tier in totals:
                    total, ee, er = _rate(plan_id, tier, month, renewal)
                    setup.append(RatePublished(
                        event_id=eid("rate"), account_id=BROADCAST_ACCOUNT, effective_on=month,
                        occurred_at=at(month - timedelta(days=20)), source="rates-admin",
                        rate_id=f"{plan_id}-{tier}-{month:%Y%m}", plan=plan_id, tier=tier, month_from=month,
                        month_through=None if month >= renewal else last_day(_add_months(renewal, -1)),
                        total_cents=total, employee_cents=ee, employer_cents=er,
                    ))

        def enrollment(p: _Member, prefix: str, action: str, line: str, cov: _Coverage, *, sent_on: date,
                       effective_on: date, begin: date, end: date | None = None,
                       dependent: int | None = None) -> EnrollmentChanged:
            """One EnrollmentChanged of the subscriber, or of dependent number ``dependent``."""
            event_id = eid(prefix)  # ids, then times: the order the seeded generator draws in
            member, relationship, tax_dependent = p.account_id, "self", True
            if dependent is not None:
                member = f"{p.account_id}-D{dependent + 1}"
                relationship = "spouse" if dependent == 0 and cov.tier in ("ESP", "FAM") else "child"
                if dependent == 0 and p.account_id in partner_accounts:
                    relationship, tax_dependent = "domestic_partner", False
            return EnrollmentChanged(
                event_id=event_id, account_id=p.account_id, effective_on=effective_on,
                occurred_at=at(sent_on), source="hr-system", member_id=member,
                relationship=relationship, plan=cov.plan, coverage_line=line,  # type: ignore[arg-type]
                tier=cov.tier, action=action, status=p.status,  # type: ignore[arg-type]
                benefit_begin=begin, benefit_end=end, agency_id=p.agency_id, tax_dependent=tax_dependent,
                elected_on=p.elected_on, cobra_start=p.hired if p.status == "cobra" else None,
            )

        hr_sends = {"add": month - timedelta(days=12), "terminate": month - timedelta(days=5),
                    "change": month - timedelta(days=8)}
        for p in people:
            if p.hired == month:
                for line, cov in sorted(p.coverages.items()):
                    setup.append(enrollment(p, "enr", "add", line, cov, sent_on=hr_sends["add"], effective_on=month,
                                            begin=month))
                    if line == "health":
                        setup.extend(
                            enrollment(p, "dep", "add", line, cov, sent_on=hr_sends["add"], effective_on=month,
                                       begin=month, dependent=d)
                            for d in range(p.dependents)
                        )
            if term_month.get(p.account_id) == month and p.terminated_after is None:
                p.terminated_after = ended = month - timedelta(days=1)
                health = p.coverages["health"]
                setup.extend(
                    enrollment(p, "term", "terminate", "health", health, sent_on=hr_sends["terminate"],
                               effective_on=ended, begin=health.begin, end=ended, dependent=d)
                    for d in range(p.dependents)
                )
                setup.extend(
                    enrollment(p, "term", "terminate", line, cov, sent_on=hr_sends["terminate"], effective_on=ended,
                               begin=cov.begin, end=ended)
                    for line, cov in sorted(p.coverages.items())
                )
            change = tier_change.get(p.account_id)
            if change is not None and change[0] == month:
                for line, cov in sorted(p.coverages.items()):
                    cov.tier = change[1]
                    setup.append(enrollment(p, "chg", "change", line, cov, sent_on=hr_sends["change"],
                                            effective_on=month, begin=month))

        # Billing and payments for the month.
        late: list[Event] = []  # retroactive changes, reported after the month's payments
        agency_trace = {a: f"TRN{month:%Y%m}{a[-3:]}{rng.randrange(10**6):06d}" for a in agencies}
        for p in people:
            if p.hired > month:
                continue
            inject = injections.get((p.account_id, month))
            terminated = p.terminated_after is not None and p.terminated_after < month
            if inject == "enrolled_not_billed":
                # billing missed this member for the month; payroll follows billing and deducts nothing
                expected.add(("enrolled_not_billed", p.account_id, month))
                continue
            billed_total = 0
            if not terminated or inject == "billed_not_enrolled":
                for line, cov in sorted(p.coverages.items()):
                    total, _ee, _er = _rate(cov.plan, cov.tier, month, renewal)
                    amount = _cobra_premium(total, rules) if p.status == "cobra" else total
                    if inject == "wrong_rate" and line == "health":
                        # billing kept last period's rate, or the wrong tier
                        amount = total + rng.choice([-1, 1]) * rng.randrange(1_500, 9_000)
                        expected.add(("wrong_rate", p.account_id, month))
                    bills.append(PremiumBilled(
                        event_id=eid("bill"), account_id=p.account_id, effective_on=month,
                        occurred_at=at(month - timedelta(days=15)), source="billing-system",
                        bill_id=f"B{month:%Y%m}-{p.account_id}-{line}", coverage_month=month, plan=cov.plan,
                        tier=cov.tier, amount_cents=amount, due_on=month, agency_id=None if p.direct_pay
                        else p.agency_id,
                    ))
                    billed_total += amount
            if inject == "billed_not_enrolled":
                # the termination reached enrollment but not billing; payroll pays the bill as sent
                expected.add(("billed_not_enrolled", p.account_id, month))
            pay = billed_total
            if inject == "missing_payment":
                expected.add(("missing_payment", p.account_id, month))
                continue
            if inject == "underpaid":
                pay -= rng.randrange(2_000, 30_000)
                expected.add(("underpaid", p.account_id, month))
            elif inject in ("overpaid", "refund_due"):
                pay += rng.randrange(2_000, 30_000)
                expected.add(("overpaid", p.account_id, month))
                if inject == "refund_due":
                    # the coverage then ends with this month: the credit can pay no later premium
                    expected.add(("refund_due", p.account_id, month))
            elif inject == "cobra_shortfall":
                # the COBRA member pays a little short: no more than the lesser of $50 and 10% of the
                # premium, so it counts as paid and the member gets a notice (26 CFR 54.4980B-8)
                limit = min(rules.cobra_shortfall_max_cents, billed_total * rules.cobra_shortfall_max_percent // 100)
                if limit > 0:  # a plan may set no allowance at all: then the member pays in full
                    pay -= rng.randint(max(1, limit // 10), limit)
                    expected.add(("cobra_shortfall", p.account_id, month))
            elif inject == "paid_after_termination":
                # payroll kept deducting after the termination
                pay = sum(_rate(c.plan, c.tier, month, renewal)[0] for c in p.coverages.values())
                expected.add(("paid_after_termination", p.account_id, month))
            if pay <= 0 or (terminated and inject not in ("billed_not_enrolled", "paid_after_termination")):
                continue
            payer = p.account_id if p.direct_pay else p.agency_id
            trace = f"DIR{month:%Y%m}{p.account_id}" if p.direct_pay else agency_trace[p.agency_id]
            remit_seq += 1
            line_event = PaymentReceived(
                event_id=eid("pay"), account_id=p.account_id, effective_on=month + timedelta(days=4),
                occurred_at=at(month + timedelta(days=4), 14), source="bank-820" if not p.direct_pay
                else "member-portal", payment_id=f"P{month:%Y%m}-{p.account_id}",
                coverage_month=month, amount_cents=pay, method="direct" if p.direct_pay else "payroll",
                payer_id=payer, remittance_id=None if p.direct_pay else f"R{month:%Y%m}-{p.agency_id}",
                trace_number=trace, tax_treatment=None if p.direct_pay else (
                    # a non-dependent partner's share is post-tax; the injected error takes it pre-tax
                    "post_tax" if p.account_id in partner_accounts and inject != "tax_treatment" else "pre_tax"
                ),
            )
            if inject == "tax_treatment":
                expected.add(("tax_treatment", p.account_id, month))
            payments.append(line_event)
            if inject == "duplicate_payment":
                # the same remittance line arrives again under a new id
                payments.append(PaymentReceived(
                    event_id=eid("pay"), account_id=p.account_id, effective_on=line_event.effective_on,
                    occurred_at=at(month + timedelta(days=6), 15), source=line_event.source,
                    payment_id=f"P{month:%Y%m}-{p.account_id}-resent", coverage_month=month, amount_cents=pay,
                    method=line_event.method, payer_id=payer, remittance_id=line_event.remittance_id,
                    trace_number=trace,
                ))
                expected.add(("duplicate_payment", p.account_id, month))
            if inject == "retroactive_change":
                # After the month was billed and paid, HR reports that coverage ended with last month.
                p.terminated_after = ended = month - timedelta(days=1)
                reported = month + timedelta(days=20)
                health = p.coverages["health"]
                late.extend(
                    enrollment(p, "term", "terminate", "health", health, sent_on=reported, effective_on=ended,
                               begin=health.begin, end=ended, dependent=d)
                    for d in range(p.dependents)
                )
                late.extend(
                    enrollment(p, "term", "terminate", line, cov, sent_on=reported, effective_on=ended,
                               begin=cov.begin, end=ended)
                    for line, cov in sorted(p.coverages.items())
                )
                expected.add(("retroactive_change", p.account_id, month))

        # Payments for people nobody knows: unapplied cash on the agency's account.
        if mi % max(1, months // per_kind) == 0 or mi == months - 1:
            for _ in range(max(1, per_kind // months + 1)):
                stranger = f"X{seed % 100:02d}{mi:02d}{rng.randrange(10**4):04d}{len(expected):05d}"
                agency = rng.choice(agencies)
                payments.append(PaymentReceived(
                    event_id=eid("pay"), account_id=stranger, effective_on=month + timedelta(days=4),
                    occurred_at=at(month + timedelta(days=4), 14), source="bank-820",
                    payment_id=f"P{month:%Y%m}-{stranger}", coverage_month=month,
                    amount_cents=rng.randrange(5_000, 200_000), method="payroll", payer_id=agency,
                    remittance_id=f"R{month:%Y%m}-{agency}", trace_number=agency_trace[agency],
                ))
                expected.add(("unmatched_payment", stranger, month))

        # One remittance per agency: the payment (BPR02) and the sum of its lines (RMR04).
        for agency in agencies:
            remittance_id = f"R{month:%Y%m}-{agency}"
            lines = [e for e in payments if isinstance(e, PaymentReceived) and e.remittance_id == remittance_id]
            if not lines:
                continue
            lines_total = sum(e.amount_cents for e in lines)
            total = lines_total + (rng.randrange(1_000, 50_000) if (agency, month) in remit_errors else 0)
            if total != lines_total:
                expected.add(("remittance_total_mismatch", f"payer:{agency}", None))  # type: ignore[arg-type]
            paid_on = month + timedelta(days=4)
            payments.append(RemittanceReceived(
                event_id=eid("remit"), account_id=f"payer:{agency}", effective_on=paid_on,
                occurred_at=at(paid_on, 16), source="bank-820", remittance_id=remittance_id, payer_id=agency,
                method="ach", payment_date=paid_on, trace_number=agency_trace[agency], total_cents=total,
                lines_total_cents=lines_total, line_count=len(lines),
            ))
        payments.extend(late)
        bills.append(BillingCycleClosed(
            event_id=eid("cycle"), account_id=BROADCAST_ACCOUNT, effective_on=month,
            occurred_at=at(month - timedelta(days=1), 22), source="billing-system", cycle_month=month,
        ))
        close = DayClosed(
            event_id=eid("day"), account_id=BROADCAST_ACCOUNT, effective_on=month_end,
            occurred_at=at(month_end, 23), source="operations", business_date=month_end,
        )
        phases += [(f"{month:%Y-%m} rates and enrollment", setup), (f"{month:%Y-%m} billing", bills),
                   (f"{month:%Y-%m} payments", payments), (f"{month:%Y-%m} day close", [close])]

    # One last business day after every grace period has run out.
    final_day = _add_months(start, months) + timedelta(days=45)
    phases.append(("final day close", [DayClosed(
        event_id=eid("day"), account_id=BROADCAST_ACCOUNT, effective_on=final_day,
        occurred_at=at(final_day, 23), source="operations", business_date=final_day,
    )]))

    # A few things upstream systems really do: resend events unchanged, send garbage.
    # Resends repeat payments already published (before the middle phase, where the demo sends them).
    all_payments = [e for name, evs in phases[: len(phases) // 2] if name.endswith("payments") for e in evs]
    program = Program(phases=phases, expected=expected, members=sum(1 + p.dependents for p in people),
                      accounts=len(people), months=months)
    program.exact_duplicates = rng.sample(all_payments, k=min(5, len(all_payments)))
    program.raw_records = [
        ("payments", b"M-garbage", b"{not json"),
        ("billing", b"M-garbage", b'{"type":"premium_billed","event_id":"bad-1","account_id":"M-garbage"}'),
        ("payments", b"M-garbage", b'{"type":"no_such_event","event_id":"bad-2","account_id":"M-garbage"}'),
    ]
    return program


# ---------------------------------------------------------------------------------------------
# Running the demo on a live stack (side effects from here on)

DEMO_DATABASE = "benefits_ledger_demo"


@dataclass
class DemoReport:
    members: int
    accounts: int
    months: int
    events_generated: int
    events_published: int
    events_applied: int
    events_duplicate: int
    events_dead_lettered: int
    discrepancies_expected: int
    discrepancies_detected: int
    missed: int
    spurious: int
    missed_examples: list[str]
    spurious_examples: list[str]
    discrepancies_by_kind: dict[str, int]
    discrepancy_events_published: int
    coverage_months: int
    billed_cents: int
    paid_cents: int
    outstanding_cents: int
    credits_cents: int
    unapplied_cents: int
    counts_add_up: bool
    events_per_second: float
    elapsed_seconds: float
    database: str

    def ok(self) -> bool:
        return self.missed == 0 and self.spurious == 0 and self.counts_add_up


async def run_program(ledger: Any, program: Program, progress: Callable[[int], None] | None = None) -> int:
    """Publish the whole program as upstream systems would (in business order, without waiting) and
    wait until the processor has taken every record and the relay has drained the outbox.

    The processor folds the input topics of a partition in timestamp order (processor/merge.py), so
    bills never overtake the enrollment they depend on, nor a business day the payments before it.
    """
    topics = ledger.settings.topics
    stop = asyncio.Event()
    services = asyncio.create_task(run_services(ledger, stop))
    watcher = ledger.store()
    publisher = ledger.publisher()

    def publish_all() -> None:
        for i, (_name, events) in enumerate(program.phases):
            extra = program.exact_duplicates if i == len(program.phases) // 2 else []
            publisher.publish([*events, *extra])
            if i == 1:
                for topic_key, key, value in program.raw_records:
                    publisher.send_raw(getattr(topics, topic_key), value=value, key=key)
        publisher.flush()

    def check() -> None:
        if services.done():
            services.result()  # re-raise the processor's error
            raise RuntimeError("the processor stopped before catching up")

    try:
        sending = asyncio.create_task(asyncio.to_thread(publish_all))
        while True:
            check()
            received = (await asyncio.to_thread(watcher.counts)).received
            if progress is not None:
                progress(received)
            if sending.done():
                sending.result()
                if received >= publisher.records_sent:
                    break
            await asyncio.sleep(0.05)
        while await asyncio.to_thread(watcher.outbox_pending, 1):
            check()
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await services
        publisher.close()
    return publisher.records_sent


def run_demo(
    settings: Any, *, members: int, months: int, seed: int,
    progress: Callable[[int], None] | None = None, on_start: Callable[[Program], None] | None = None,
) -> DemoReport:
    """Generate, publish, fold and compare with what was injected; everything started is stopped."""
    import time as _time

    from processor.app import open_ledger  # the composition root

    program = generate(members, months, seed, plan=settings.plan)
    if on_start is not None:
        on_start(program)
    with open_ledger(settings, database=DEMO_DATABASE, reset_database=True) as ledger:
        started = _time.perf_counter()
        published = asyncio.run(run_program(ledger, program, progress))
        elapsed = _time.perf_counter() - started
        store = ledger.store()
        summary = store.summary()
        rows = store.discrepancies(limit=10**9)
        detected = {(d.kind, d.account_id, d.coverage_month) for d in rows}
        missed = sorted(program.expected - detected, key=str)
        spurious = sorted(detected - program.expected, key=str)
        # a second row for an already-counted finding is spurious too
        extra_rows = len(rows) - len(detected)
        counts = summary.counts
        report = DemoReport(
            members=summary.members, accounts=summary.accounts, months=months,
            events_generated=program.events, events_published=published,
            events_applied=counts.applied, events_duplicate=counts.duplicates,
            events_dead_lettered=counts.dead_lettered,
            discrepancies_expected=len(program.expected), discrepancies_detected=len(rows),
            missed=len(missed), spurious=len(spurious) + extra_rows,
            missed_examples=[" ".join(map(str, m)) for m in missed[:10]],
            spurious_examples=[" ".join(map(str, s)) for s in spurious[:10]],
            discrepancies_by_kind=dict(summary.discrepancies_opened_by_kind),
            # the outbox is drained before the report: every opened and resolved event was published
            discrepancy_events_published=len(rows) + sum(1 for d in rows if d.status == "resolved"),
            coverage_months=summary.coverage_months, billed_cents=summary.billed_cents,
            paid_cents=summary.paid_cents, outstanding_cents=summary.outstanding_cents,
            credits_cents=summary.credits_cents, unapplied_cents=summary.unapplied_cents,
            counts_add_up=counts.received == published
            and counts.received == counts.applied + counts.duplicates + counts.dead_lettered,
            events_per_second=round(published / elapsed, 1), elapsed_seconds=round(elapsed, 2),
            database=DEMO_DATABASE,
        )
    return report

