"""The errors the program injects, kind by kind, and how each is settled (or left open).

``choose`` places them on distinct members (steadily enrolled ones, so nothing else moves their
months, or later hires); the generator (program.py) then asks, member by member and month by month,
what HR sends before the month (``hr_before``) and late in it (``hr_late``, ``late_change``), what
billing sends (``billing``, ``catch_up_months``), what the payer pays (``payment``,
``catch_up_payments``) and what follows the payment (``after_payment``). Every finding is recorded with
the status each of its rows must end in and the event that closes it.

The placing is here; what each injected error makes billing, the payers and HR send month by month is
in injections_billing.py and injections_enrollment.py, whose functions this module re-exports.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING

from processor.entrypoints.demo.injections_billing import after_payment as after_payment
from processor.entrypoints.demo.injections_billing import billing as billing
from processor.entrypoints.demo.injections_billing import misdirect as misdirect
from processor.entrypoints.demo.injections_billing import payment as payment
from processor.entrypoints.demo.injections_billing import recover as recover
from processor.entrypoints.demo.injections_billing import refund as refund
from processor.entrypoints.demo.injections_billing import strangers as strangers
from processor.entrypoints.demo.injections_enrollment import catch_up_months as catch_up_months
from processor.entrypoints.demo.injections_enrollment import catch_up_payments as catch_up_payments
from processor.entrypoints.demo.injections_enrollment import caught_up as caught_up
from processor.entrypoints.demo.injections_enrollment import hired as hired
from processor.entrypoints.demo.injections_enrollment import hired_late as hired_late
from processor.entrypoints.demo.injections_enrollment import hr_before as hr_before
from processor.entrypoints.demo.injections_enrollment import hr_late as hr_late
from processor.entrypoints.demo.injections_enrollment import late_change as late_change
from processor.entrypoints.demo.injections_enrollment import pays_unmonthed as pays_unmonthed
from processor.entrypoints.demo.model import add_months, last_day
from processor.entrypoints.demo.records import INJECTED_KINDS, Member, ProgramTooSmall

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


@dataclass(frozen=True)
class Special:
    """An injection that is more than one kind on one month of a member:

    - ``unknown_first``: a new hire's 834 termination of one line (after its second month) arrives before
      the add of that line (the add was dead-lettered and resent): unknown_coverage, resolved by the add;
      the books stand as if in order;
    - ``unknown_never``: a change of a vision coverage the member never had: unknown_coverage, open;
    - ``late_hire``: a new hire's 834 arrives after the billing cycles of the first two months closed:
      enrolled_not_billed in each; ``settle``: billing bills both the month after and payroll pays them;
    - ``drop_to_emp``: the subscriber drops to EMP from ``month`` while the dependents stay covered:
      eligibility each month; ``settle``: HR ends the dependents' coverage the month after;
    - ``aged_out``: a child turns 26 in ``month`` and stays covered: eligibility each month after;
    - ``unmonthed``: a retiree's payment for ``month`` names no month (applied to the oldest balance due);
    - ``partner_mid_month``: an EMP subscriber moves to ESP on ``day`` of ``month`` with a domestic partner
      who is not a tax dependent: payroll takes the partner's share after tax from the first month whose
      premium prices the partner (the next one under whole months, this one under daily proration) and
      before that pre-tax, rightly: no finding.
    """

    what: str
    month: date
    line: str | None = None
    settle: bool = False
    day: int = 1


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
    """Place every injected error: ``per_kind`` of each kind on distinct steadily enrolled members (the
    kinds with shapes of their own, Special, as the members allow: see ``new_kinds``)."""
    rng, start, months = b.rng, b.start, b.months
    steady = [p for p in b.people if p.hired == start and p.begin_day == 1 and p.account_id not in b.ends
              and p.account_id not in b.tier_change]
    rng.shuffle(steady)
    pool = Pool(steady)
    later = [p for p in b.people if p.hired > start and p.begin_day == 1 and p.account_id not in b.ends
             and p.account_id not in b.tier_change]
    rng.shuffle(later)
    later_pool = Pool(later)
    fits: dict[str, list[Callable[[Member], bool]]] = {
        "paid_after_termination": [lambda p: not p.direct_pay],
        # payroll, a partner on the coverage (ESP or FAM); a small program gives one to a payroll member
        "tax_treatment": [lambda p: not p.direct_pay and p.partner() is not None, lambda p: not p.direct_pay],
    }
    placed_below = ("unmatched_payment", "remittance_total_mismatch", "cobra_shortfall", "unknown_coverage",
                    "eligibility", "refund_recovery")
    for kind in INJECTED_KINDS:
        if kind in placed_below:
            continue  # placed below: on strangers, agencies, COBRA members, and the new kinds' own shapes
        for _ in range(b.per_kind):
            p = pool.take(*fits.get(kind, []))
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
            if kind == "tax_treatment":
                give_partner(b, p)
    new_kinds(b, pool, later_pool, required=True)

    # Members whose partner is a domestic partner who is not a tax dependent: the injected tax-treatment
    # errors, and as many again whose payroll gets it right.
    b.partner_accounts = {a for (a, _), kind in b.injections.items() if kind == "tax_treatment"}
    for _ in range(len(b.partner_accounts)):
        if (partnered := pool.take_if_any(lambda p: p.partner() is not None)) is not None:
            b.partner_accounts.add(partnered.account_id)

    # COBRA continuation members: a small share of the members who carry no other injected error (a small
    # underpayment of theirs would be a COBRA shortfall, not underpaid), later starts, tier changes and
    # ordinary terminations included. A few of them pay one month a little short: the COBRA shortfalls.
    taken = b.taken()
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
    cobra_ids = {p.account_id for p in cobra}
    pool.members = [p for p in pool.members if p.account_id not in cobra_ids]
    later_pool.members = [p for p in later_pool.members if p.account_id not in cobra_ids]

    # What the members left allow.
    several_at_once(b, pool)
    new_kinds(b, pool, later_pool, required=False)
    # A partner added within a month, taxed only where priced (no finding when payroll does it right).
    for _ in range(max(1, b.per_kind // 8)):
        if (single := pool.take_if_any(lambda p: not p.direct_pay and p.coverages["health"].tier == "EMP")) is None:
            break
        b.special[single.account_id] = Special("partner_mid_month", add_months(start, rng.randrange(1, months)),
                                               day=rng.randint(5, 25))
        b.partner_accounts.add(single.account_id)
    # Retirees paying one month without naming it: applied to the oldest month with a balance due.
    for _ in range(max(1, b.per_kind // 8)):
        if (retiree := pool.take_if_any(lambda p: p.direct_pay and p.status == "retiree")) is None:
            break
        b.special[retiree.account_id] = Special("unmonthed", add_months(start, rng.randrange(months)))

    # Agency remittances whose payment total is not the sum of their lines, one per agency at most.
    b.remit_errors = {(a, add_months(start, rng.randrange(months)))
                      for a in rng.sample(b.agencies, k=min(b.per_kind, len(b.agencies)))}
    # Payroll lines sent under a mistyped member id (a digit too many), or naming no month: unmatched cash
    # on an account nobody knows, or on the member's account without a month, while the member's month
    # goes unpaid, a missing payment once its grace period has run out. Two months later the accounts
    # staff apply the cash to the member's month (cash_applied); the ledger posts the payment there
    # itself, and both discrepancies are resolved.
    taken = b.taken()
    targets = [p for p in eligible if p.account_id not in cobra_ids and p.account_id not in taken
               and any(add_months(m, 2) < b.end for m in b.covered(p))]
    for i, p in enumerate(rng.sample(targets, k=min(len(targets), max(2, b.per_kind // 2)))):
        month = rng.choice([m for m in b.covered(p) if add_months(m, 2) < b.end])
        b.misdirected[(p.account_id, month)] = f"{p.account_id}{rng.randrange(10)}" if i % 2 == 0 else ""


def give_partner(b: Builder, p: Member) -> None:
    """A small program's member made to have a partner before anything is sent: EMP becomes ESP, ECH FAM."""
    if p.partner() is not None:
        return
    b.dependent(p, "partner")
    tier = {"EMP": "ESP", "ECH": "FAM"}[p.coverages["health"].tier]
    for cov in p.coverages.values():
        cov.tier = tier


def new_kinds(b: Builder, pool: Pool, later_pool: Pool, *, required: bool) -> None:
    """The injections the order of enrollment events, late enrollments, eligibility and refunds of
    reversed money bring (Special). ``required``: one each of those the domain's kinds need (a change of
    a coverage never enrolled, on a member that already carries an error, since it moves nothing else;
    a subscriber on EMP with dependents still covered; a refund paid from money later reversed), which
    the program cannot do without; else the rest, as the members left allow."""
    rng, start, months = b.rng, b.start, b.months
    n = max(1, b.per_kind // 4) - (1 if not required else 0)
    if required:
        n = 1

    def take(fit: Callable[[Member], bool], *, after: int = 0, must: bool = required) -> Member | None:
        """A steady member that fits, else a later hire that fits with ``after`` months of the program
        after its first; ProgramTooSmall if ``must`` and there is none."""
        p = pool.take_if_any(fit) or later_pool.take_if_any(lambda p: fit(p) and add_months(p.hired, after) < b.end)
        if p is None and must:
            raise ProgramTooSmall("not enough members to place the injected errors; raise --members")
        return p

    def month_within(p: Member, first: int, last_but: int) -> date:
        """A month from ``first`` months after the member's first on, leaving ``last_but`` months after it."""
        since = (p.hired.year - start.year) * 12 + p.hired.month - start.month
        return add_months(start, rng.randrange(since + first, months - last_but))

    for _ in range(n):
        # a change of a vision coverage never enrolled changes nothing else: it may share a member with
        # another error (not a COBRA member's: their only error is the shortfall)
        shared = sorted({a for (a, _), k in b.injections.items() if k != "cobra_shortfall"} - set(b.special))
        people = {p.account_id: p for p in b.people}
        host = next((people[a] for a in shared if "vision" not in people[a].coverages), None) if required else None
        if host is None and (host := take(lambda p: "vision" not in p.coverages)) is None:
            break
        b.special[host.account_id] = Special("unknown_never", month_within(host, 0, 0))
        b.expect(("unknown_coverage", host.account_id, None))
    for i in range(n):
        # the first is left open, the next settled by HR the month after
        settle = not required and i % 2 == 0
        p = take(lambda p: bool(p.covered_family), after=2, must=False)
        if p is None and required:
            p = pool.take()
            give_partner(b, p)
        if p is None:
            break
        month = month_within(p, 1, 1)
        b.special[p.account_id] = Special("drop_to_emp", month, settle=settle)
        if not settle:
            for m in months_from(b, month):
                b.expect(("eligibility", p.account_id, m))
    for _ in range(1 if required else max(0, b.per_kind // 8 - 1)):
        if (p := take(lambda p: True, after=2)) is None:
            break
        if not p.direct_pay:
            p.direct_pay, p.status = True, "retiree"  # pays the premium directly
        b.injections[(p.account_id, month_within(p, 0, 2))] = "refund_recovery"
    if required:
        return
    for _ in range(n + 1):
        if (p := later_pool.take_if_any(lambda p: len(p.coverages) > 1)) is None:
            break
        line = rng.choice(sorted(set(p.coverages) - {"health"}))
        b.special[p.account_id] = Special("unknown_first", p.hired, line=line)
    for i in range(n + 1):
        if (p := later_pool.take_if_any(lambda p: add_months(p.hired, 1) < b.end)) is None:
            break
        settle = i % 2 == 0 and add_months(p.hired, 2) < b.end
        b.special[p.account_id] = Special("late_hire", p.hired, settle=settle)
        if not settle:
            for m in (p.hired, add_months(p.hired, 1)):
                b.expect(("enrolled_not_billed", p.account_id, m))
    for _ in range(n + 1):
        if (p := take(lambda p: bool(p.children()), after=1)) is None:
            break
        month = month_within(p, 0, 1)  # the 26th birthday's month
        child = rng.choice(p.children())
        child.birth_date = date(month.year - 26, month.month, rng.randint(1, 28))
        b.special[p.account_id] = Special("aged_out", month)
        for m in months_from(b, add_months(month, 1)):
            b.expect(("eligibility", p.account_id, m))


def months_from(b: Builder, month: date) -> list[date]:
    """The program's months from ``month`` on."""
    out = []
    while month < b.end:
        out.append(month)
        month = add_months(month, 1)
    return out


def covering(lines: set[str]) -> Callable[[Member], bool]:
    """Fits a member covered on exactly these lines."""
    return lambda p: set(p.coverages) == lines


def several_at_once(b: Builder, pool: Pool) -> None:
    """Retroactive changes that move several coverages of one member at once, and one within a month:

    - an 834 that ends the member's health (dependents included) and vision coverage, reaching back two
      billed months; one in three keeps dental and is settled the month after (billing credits the ended
      plans' bills with adjustment_posted, the accounts staff refund the credit), one keeps dental, one
      loses every coverage;
    - a tier change on every line between ECH and FAM (a spouse joins or leaves), effective the month
      before the one just billed (up: bill the difference; down: refund it);
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
        # a family with two children or more, between ECH and FAM: the only tiers that cover the same
        # people (two children), so the change keeps tier and family matching event by event
        if (p := pool.take_if_any(lambda p: p.coverages["health"].tier in ("ECH", "FAM")
                                  and len(p.children()) >= 2)) is None:
            break
        if months < 4:
            break  # the change must fall after the coverage began: a spouse cannot leave before joining
        month = add_months(start, rng.randrange(2, months - 1))
        tier = "FAM" if p.coverages["health"].tier == "ECH" else "ECH"
        b.retro[(p.account_id, month)] = Retro("tier", add_months(month, -1), tier=tier)
    for _ in range(n):
        if (p := pool.take_if_any()) is None:
            return
        month = add_months(start, rng.randrange(0, months - 1))
        b.retro[(p.account_id, month)] = Retro("mid_month", month + timedelta(days=rng.randint(5, 25) - 1))
