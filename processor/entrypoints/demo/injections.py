"""The errors the program injects, kind by kind, and how each is settled (or left open).

``choose`` places them on distinct members (steadily enrolled ones, so nothing else moves their
months); the generator (program.py) then asks, member by member and month by month, what billing sends
(``billing``), what the payer pays (``payment``), what follows the payment (``after_payment``) and which
change HR reports after the month was billed and paid (``late_change``). Every finding is recorded
with the status each of its rows must end in and the event that closes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING

from events.types import AdjustmentPosted, CashApplied, Event, PaymentReceived, RefundIssued, RefundReturned
from processor.entrypoints.demo.model import add_months, last_day
from processor.entrypoints.demo.records import INJECTED_KINDS, TIERS, Member, ProgramTooSmall

if TYPE_CHECKING:
    from processor.entrypoints.demo.program import Builder

COBRA_SHARE = 0.04  # of the population: former employees and dependents on COBRA continuation coverage


@dataclass(frozen=True)
class Retro:
    """A change HR reports after the month was billed and paid, reaching back into billed months."""

    what: str  # "terminate" (every coverage), "end_lines" (some lines), "tier" (every line), "mid_month"
    change: date  # the last covered day (terminations), or the day the new tier applies
    lines: tuple[str, ...] | None = None  # end_lines: the lines that end
    tier: str | None = None  # tier: the new tier
    settle: bool = False  # billing corrects the months the month after, and the credit is refunded


class Pool:
    """Steadily enrolled members not yet given an error, in a shuffled order."""

    def __init__(self, members: list[Member]) -> None:
        self.members = members

    def take(self, *fits: Callable[[Member], bool]) -> Member:
        """The first member that fits the first of ``fits`` any member fits (any member without one)."""
        p = self.take_if_any(*fits)
        if p is None:
            raise ProgramTooSmall("not enough members to place the injected errors; raise --members")
        return p

    def take_if_any(self, *fits: Callable[[Member], bool]) -> Member | None:
        for fit in fits or (lambda p: True,):
            for i, p in enumerate(self.members):
                if fit(p):
                    return self.members.pop(i)
        return None


def choose(b: Builder) -> None:
    """Place every injected error: ``per_kind`` of each kind on distinct steadily enrolled members."""
    rng, start, months = b.rng, b.start, b.months
    steady = [p for p in b.people if p.hired == start and p.begin_day == 1 and p.account_id not in b.ends
              and p.account_id not in b.tier_change]
    rng.shuffle(steady)
    pool = Pool(steady)
    fits = {
        "paid_after_termination": lambda p: not p.direct_pay,
        "tax_treatment": lambda p: not p.direct_pay and p.dependents > 0,  # payroll, partner on the coverage
    }
    for kind in INJECTED_KINDS:
        if kind in ("unmatched_payment", "remittance_total_mismatch", "cobra_shortfall"):
            continue  # placed below: on strangers, agencies and COBRA members
        for _ in range(b.per_kind):
            p = pool.take(*filter(None, [fits.get(kind)]))
            # month 1..months-2 so that a following month exists (termination, missing-payment deadline)
            month = add_months(start, rng.randrange(1, months - 1))
            if kind == "retroactive_change":
                # after the month was billed and paid, HR reports that coverage ended with last month
                b.retro[(p.account_id, month)] = Retro("terminate", month - timedelta(days=1))
                continue
            b.injections[(p.account_id, month)] = kind
            if kind in ("paid_after_termination", "billed_not_enrolled"):
                b.ends[p.account_id] = month - timedelta(days=1)
            if kind == "refund_due":
                b.ends[p.account_id] = last_day(month)  # coverage ends with the overpaid month
    several_at_once(b, pool)

    # Members whose first dependent is a domestic partner who is not a tax dependent: the injected
    # tax-treatment errors, and as many again whose payroll gets it right.
    b.partner_accounts = {a for (a, _), kind in b.injections.items() if kind == "tax_treatment"}
    b.partner_accounts |= {p.account_id for p in pool.members[:len(b.partner_accounts)] if p.dependents}

    # COBRA continuation members: a small share of the members who carry no other injected error (a small
    # underpayment of theirs would be a COBRA shortfall, not underpaid), later starts, tier changes and
    # ordinary terminations included. A few of them pay one month a little short: the COBRA shortfalls.
    taken = {a for a, _ in b.injections} | {a for a, _ in b.retro} | b.partner_accounts
    eligible = [p for p in b.people if p.status == "active" and p.account_id not in taken and p.begin_day == 1
                and b.covered(p)]
    if len(eligible) < b.per_kind:
        raise ProgramTooSmall("not enough members to place the injected errors; raise --members")
    cobra = rng.sample(eligible, k=min(len(eligible), max(b.per_kind, round(b.members * COBRA_SHARE))))
    for p in cobra:
        # pays the 102% premium directly, elected a few weeks before continuation coverage began (and
        # before HR sent the enrollment, 12 days before)
        p.status, p.direct_pay = "cobra", True
        p.elected_on = p.hired - timedelta(days=12 + rng.randrange(30))
    for p in cobra[:b.per_kind]:
        b.injections[(p.account_id, rng.choice(b.covered(p)))] = "cobra_shortfall"
    # Agency remittances whose payment total is not the sum of their lines, one per agency at most.
    b.remit_errors = {(a, add_months(start, rng.randrange(months)))
                      for a in rng.sample(b.agencies, k=min(b.per_kind, len(b.agencies)))}
    # Payroll lines sent under a mistyped member id (a digit too many): unmatched cash on an account nobody
    # knows while the member's month goes unpaid, a missing payment once its grace period has run out. Two
    # months later the accounts staff apply the cash to the member's month (cash_applied); the ledger posts
    # the payment there itself, and both discrepancies are resolved.
    cobra_ids = {p.account_id for p in cobra}
    targets = [p for p in eligible if p.account_id not in cobra_ids
               and any(add_months(m, 2) < b.end for m in b.covered(p))]
    for p in rng.sample(targets, k=min(len(targets), max(1, b.per_kind // 2))):
        month = rng.choice([m for m in b.covered(p) if add_months(m, 2) < b.end])
        b.misdirected[(p.account_id, month)] = f"{p.account_id}{rng.randrange(10)}"


def covering(lines: set[str]) -> Callable[[Member], bool]:
    """Fits a member covered on exactly these lines."""
    return lambda p: set(p.coverages) == lines


def several_at_once(b: Builder, pool: Pool) -> None:
    """Retroactive changes that move several coverages of one member at once, and one within a month:

    - an 834 that ends the member's health (dependents included) and vision coverage, reaching back two
      billed months; one in three keeps dental and is settled the month after (billing credits the ended
      plans' bills with adjustment_posted, the accounts staff refund the credit), one keeps dental, one
      loses every coverage;
    - a tier change on every line, effective the month before the one just billed (up: bill the
      difference; down: refund it);
    - coverage that ended on a day within the month just billed: under daily proration the month owes
      its covered days only; under whole months it changes nothing.

    A small program places what its members allow (the other kinds come first).
    """
    rng, start, months = b.rng, b.start, b.months
    n = max(1, b.per_kind // 2)
    reach = 2 if months >= 4 else 1
    for i in range(n):
        # one in three keeps dental and is settled, one keeps dental, one loses every coverage
        shape = {"health", "vision", "dental"} if i % 3 != 2 else {"health", "vision"}
        p = pool.take_if_any(covering(shape), lambda p: "vision" in p.coverages,
                             lambda p: "dental" in p.coverages)  # small programs: what there is
        if p is None:
            return  # a small program: every steady member already carries an error
        month = add_months(start, rng.randrange(reach, months - 1))
        lines = tuple(line for line in ("health", "vision") if line in p.coverages)
        b.retro[(p.account_id, month)] = Retro(
            "end_lines", add_months(month, 1 - reach) - timedelta(days=1), lines=lines,
            settle=i % 3 == 0 and "dental" in p.coverages)
    for _ in range(n):
        if (p := pool.take_if_any()) is None:
            return
        month = add_months(start, rng.randrange(1, months - 1))
        tier = rng.choice([t for t in TIERS if t != p.coverages["health"].tier])
        b.retro[(p.account_id, month)] = Retro("tier", add_months(month, -1), tier=tier)
    for _ in range(n):
        if (p := pool.take_if_any()) is None:
            return
        month = add_months(start, rng.randrange(0, months - 1))
        b.retro[(p.account_id, month)] = Retro("mid_month", month + timedelta(days=rng.randint(5, 25) - 1))


# ---------------------------------------------------------------------------------------------
# Month by month


def billing(b: Builder, p: Member, month: date, inject: str | None, due: list[tuple[str, str, str, int]]
            ) -> list[tuple[str, str, str, int]]:
    """What billing sends for the member's month: what is due, unless an error is injected there."""
    found = (inject or "", p.account_id, month)
    if inject == "enrolled_not_billed":
        b.expect(found)  # billing missed the member; payroll follows billing and deducts nothing
        return []
    if inject == "billed_not_enrolled":
        # the termination reached enrollment but not billing, which bills last month's coverage
        assert not due, f"{p.account_id} is still covered in {month}"
        b.expect(found)
        return [(line, cov.plan, cov.tier, total) for line, cov in sorted(p.coverages.items())
                if (total := b.pricing.rates.total(cov.plan, cov.tier, month)) is not None]
    if inject == "wrong_rate":
        b.expect(found)  # billing kept last period's rate, or the wrong tier
        return [(line, plan_id, tier, amount + (b.rng.choice([-1, 1]) * b.rng.randrange(1_500, 9_000)
                                                if line == "health" else 0))
                for line, plan_id, tier, amount in due]
    return due


def payment(b: Builder, p: Member, month: date, inject: str | None, billed: int | None) -> int | None:
    """What the payer pays for the member's month (None: nothing); ``billed``: the month's bills."""
    found = (inject or "", p.account_id, month)
    rng, rules = b.rng, b.rules
    if inject == "paid_after_termination":
        b.expect(found)  # payroll kept deducting after the termination
        return sum(b.pricing.rates.total(c.plan, c.tier, month) or 0 for c in p.coverages.values())
    if billed is None:
        return None
    if inject == "missing_payment":
        b.expect(found)
        return None
    if inject == "underpaid":
        b.expect(found)
        return billed - rng.randrange(2_000, 30_000)
    if inject in ("overpaid", "refund_due"):
        pay = billed + rng.randrange(2_000, 30_000)
        overpaid = ("overpaid", p.account_id, month)
        b.expect(overpaid)
        if inject == "refund_due":
            # the coverage then ends with this month: the credit can pay no later premium, so the
            # overpayment becomes a refund due when the termination arrives (closing the overpaid)
            b.expect(overpaid, [("resolved", None)])
            b.close_on_termination[p.account_id] = overpaid
            b.expect(found, refund(b, p, month, pay - billed))
        return pay
    if inject == "cobra_shortfall":
        # the COBRA member pays a little short: no more than the lesser of $50 and 10% of the premium,
        # so it counts as paid and the member gets a notice (26 CFR 54.4980B-8)
        limit = min(rules.cobra_shortfall_max_cents, billed * rules.cobra_shortfall_max_percent // 100)
        if limit > 0:  # a plan may set no allowance at all: then the member pays in full
            b.expect(found)
            return billed - rng.randint(max(1, limit // 10), limit)
    return billed


def refund(b: Builder, p: Member, month: date, credit: int) -> list[tuple[str, str | None]]:
    """The accounts staff act on the n-th refund due, in the month after the overpaid one (when the
    termination that makes it a refund has arrived): one in three is refunded and the check comes back
    (the credit is on the month again: refund_due opens anew), one in three is refunded, one in three is
    left open. Returns (final status, closing event) of each refund_due row of the month."""
    n = b.refunds_seen
    b.refunds_seen += 1
    if n % 3 == 2:
        return [("open", None)]
    payee = p.account_id if p.direct_pay else p.agency_id
    refund_id = f"RF{month:%Y%m}-{p.account_id}"
    issued_on = add_months(month, 1) + timedelta(days=6)
    issued = RefundIssued(
        event_id=b.eid("refund"), account_id=p.account_id, effective_on=issued_on, occurred_at=b.at(issued_on, 10),
        source="accounts-staff", refund_id=refund_id, payee_id=payee, amount_cents=credit,
        method="check" if p.direct_pay else "ach", reason="premium paid for a month after coverage ended",
        coverage_month=month,
    )
    events: list[Event] = [issued]
    if n % 3 == 0:
        returned_on = issued_on + timedelta(days=12)
        events.append(RefundReturned(
            event_id=b.eid("refund-back"), account_id=p.account_id, effective_on=returned_on,
            occurred_at=b.at(returned_on, 10), source="bank-returns", refund_id=refund_id,
            reason="R03 no account/unable to locate account" if not p.direct_pay else "check returned: moved",
        ))
    b.scheduled.setdefault(add_months(month, 1), []).extend(events)
    return [("resolved", issued.event_id), ("open", None)] if n % 3 == 0 else [("resolved", issued.event_id)]


def misdirect(b: Builder, p: Member, month: date, pay: int) -> str | None:
    """The mistyped member id the payroll line goes to, if one is injected on the month: the member's
    month stays unpaid until the cash is applied to it (two months on, after its grace period ran out)."""
    typo = b.misdirected.get((p.account_id, month))
    if typo is None:
        return None
    applied_on = add_months(month, 2) + timedelta(days=9)
    application = CashApplied(
        event_id=b.eid("apply"), account_id=typo, effective_on=applied_on,
        occurred_at=b.at(applied_on, 11), source="accounts-staff", application_id=f"CA{month:%Y%m}-{typo}",
        payment_id=f"P{month:%Y%m}-{typo}", to_account_id=p.account_id, to_coverage_month=month,
        amount_cents=pay, reason=f"member id {typo} keyed with a digit too many: {p.account_id}",
    )
    for found in (("unmatched_payment", typo, month), ("missing_payment", p.account_id, month)):
        b.expect(found, [("resolved", application.event_id)])
    b.scheduled.setdefault(add_months(month, 2), []).append(application)
    b.derived_payments += 1
    return typo


def after_payment(b: Builder, p: Member, month: date, inject: str | None, line: PaymentReceived) -> list[Event]:
    """What follows the member's payment line: the same line resent under a new id."""
    if inject == "tax_treatment":
        b.expect(("tax_treatment", p.account_id, month))
    if inject != "duplicate_payment":
        return []
    b.expect(("duplicate_payment", p.account_id, month))
    return [PaymentReceived(
        event_id=b.eid("pay"), account_id=p.account_id, effective_on=line.effective_on,
        occurred_at=b.at(month + timedelta(days=6), 15), source=line.source,
        payment_id=f"P{month:%Y%m}-{p.account_id}-resent", coverage_month=month, amount_cents=line.amount_cents,
        method=line.method, payer_id=line.payer_id, remittance_id=line.remittance_id,
        trace_number=line.trace_number,
    )]


def late_change(b: Builder, p: Member, month: date) -> list[Event]:
    """The retroactive change HR reports 20 days into the month, after the month was billed and paid.

    Every billed month whose premium the change moves (by the demo's own pricing) is a retroactive
    change, whose premium "before" is the month's premium before the change's first event."""
    r = b.retro.get((p.account_id, month))
    if r is None:
        return []
    billed = sorted(m for a, m in b.billed if a == p.account_id)
    before = {m: b.pricing.premium(p.account_id, m) for m in billed}
    reported = month + timedelta(days=20)
    if r.what == "tier":
        assert r.tier is not None
        events: list[Event] = list(b.change_tier(p, r.change, r.tier, reported))
    else:
        events = list(b.terminate(p, r.change, reported, r.lines))
        if r.lines is None:
            b.ended.add(p.account_id)
    moved = [m for m in billed if b.pricing.premium(p.account_id, m) != before[m]]
    following = add_months(month, 1)
    for m in moved:
        b.retro_changes[(p.account_id, m)] = events[0].event_id
        found = ("retroactive_change", p.account_id, m)
        if not r.settle:
            b.expect(found)
            continue
        assert r.lines is not None
        # billing credits the ended plans' bills; the month's premium is then what it owes, its credit
        # (overpaid: the member keeps other coverage) is refunded to whoever paid
        credits = [AdjustmentPosted(
            event_id=b.eid("adj"), account_id=p.account_id, effective_on=following + timedelta(days=2),
            occurred_at=b.at(following - timedelta(days=10), 13), source="billing-system",
            adjustment_id=f"ADJ{m:%Y%m}-{p.account_id}-{line}", coverage_month=m,
            amount_cents=-b.billed[(p.account_id, m)][line], plan=p.coverages[line].plan,
            reason=f"{line} coverage ended {r.change} (enrollment change {events[0].event_id})",
        ) for line in r.lines]
        b.scheduled_bills.setdefault(following, []).extend(credits)
        credit = -sum(c.amount_cents for c in credits)
        assert b.paid[(p.account_id, m)] == sum(b.billed[(p.account_id, m)].values())
        refunded_on = following + timedelta(days=8)
        issued = RefundIssued(
            event_id=b.eid("refund"), account_id=p.account_id, effective_on=refunded_on,
            occurred_at=b.at(refunded_on, 10), source="accounts-staff", refund_id=f"RF{m:%Y%m}-{p.account_id}-retro",
            payee_id=p.account_id if p.direct_pay else p.agency_id, amount_cents=credit,
            method="check" if p.direct_pay else "ach", reason="premium for coverage ended retroactively",
            coverage_month=m,
        )
        b.scheduled.setdefault(following, []).append(issued)
        b.expect(found, [("resolved", credits[-1].event_id)])
        b.expect(("overpaid", p.account_id, m), [("resolved", issued.event_id)])
    return events


def strangers(b: Builder, mi: int, month: date, traces: dict[str, str]) -> list[Event]:
    """Payments for people nobody knows: unapplied cash on the agency's account."""
    out: list[Event] = []
    if not (mi % max(1, b.months // b.per_kind) == 0 or mi == b.months - 1):
        return out
    for _ in range(max(1, b.per_kind // b.months + 1)):
        stranger = f"X{b.seed % 100:02d}{mi:02d}{b.rng.randrange(10**4):04d}{len(b.expected):05d}"
        agency = b.rng.choice(b.agencies)
        out.append(PaymentReceived(
            event_id=b.eid("pay"), account_id=stranger, effective_on=month + timedelta(days=4),
            occurred_at=b.at(month + timedelta(days=4), 14), source="bank-820",
            payment_id=f"P{month:%Y%m}-{stranger}", coverage_month=month,
            amount_cents=b.rng.randrange(5_000, 200_000), method="payroll", payer_id=agency,
            remittance_id=f"R{month:%Y%m}-{agency}", trace_number=traces[agency],
        ))
        b.expect(("unmatched_payment", stranger, month))
    return out
