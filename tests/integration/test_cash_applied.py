"""Unapplied cash applied to another member through the real broker and PostgreSQL: the ledger posts
the payment on the payments topic itself (through the outbox), folds it on the right account, and the
counts, the payer's cash and replay all agree."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime

from events import codec
from events.types import CashApplied, EnrollmentChanged, Event, PaymentReceived, PremiumBilled, RatePublished
from processor.app import open_ledger
from processor.batch import partition_for
from processor.settings import Settings
from replay.verify import verify
from tests.integration.support import consume_all
from tests.integration.test_pipeline import process_until

T0 = datetime(2026, 2, 3, 9, 0, tzinfo=UTC)
FEB = date(2026, 2, 1)


def _events(member: str, typo: str) -> list[Event]:
    common = {"occurred_at": T0, "source": "test"}
    return [
        RatePublished(event_id=f"{member}-rate", account_id="*", effective_on=date(2026, 1, 1), rate_id="R1",
                      plan="UMP", tier="EMP", month_from=date(2026, 1, 1), total_cents=78_412,
                      employee_cents=11_762, employer_cents=66_650, **common),
        EnrollmentChanged(event_id=f"{member}-enr", account_id=member, effective_on=date(2026, 1, 1),
                          member_id=member, plan="UMP", coverage_line="health", tier="EMP", action="add",
                          benefit_begin=date(2026, 1, 1), agency_id="AG-9", **common),
        PremiumBilled(event_id=f"{member}-bill", account_id=member, effective_on=FEB, bill_id=f"B-{member}",
                      coverage_month=FEB, plan="UMP", tier="EMP", amount_cents=78_412, due_on=date(2026, 2, 1),
                      agency_id="AG-9", **common),
        PaymentReceived(event_id=f"{typo}-pay", account_id=typo, effective_on=date(2026, 2, 5), payment_id="P-TYPO",
                        coverage_month=FEB, amount_cents=78_412, method="payroll", payer_id="AG-9",
                        trace_number="TRN-2", **common),
        CashApplied(event_id=f"{typo}-apply", account_id=typo, effective_on=date(2026, 2, 9),
                    application_id="CA-1", payment_id="P-TYPO", to_account_id=member, to_coverage_month=FEB,
                    amount_cents=78_412, reason="member id typed wrong", **common),
    ]


def test_cash_applied_to_another_member_is_posted_there_by_the_ledger_and_counted_once(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(consumer_group=f"cash-{uuid.uuid4().hex[:8]}")
    member, typo = f"M-{uuid.uuid4().hex[:6]}", f"X-{uuid.uuid4().hex[:6]}"
    with open_ledger(settings) as ledger:
        with ledger.publisher() as pub:
            pub.publish(_events(member, typo))
        sent = pub.records_sent  # the rate goes to every partition
        # The derived payment comes back through the payments topic: one record more than was published
        # (process_until waits for the ledger's own posted records on top of ``sent``).
        asyncio.run(process_until(ledger, sent, relay=True))
        store = ledger.store()
        counts = store.counts()
        assert (counts.received, counts.applied, counts.duplicates, counts.dead_lettered) == (sent + 1, sent + 1, 0, 0)
        bal = store.balance(member)
        assert bal is not None
        [feb] = [m for m in bal.months if m.coverage_month == FEB]
        assert (feb.billed_cents, feb.paid_cents, feb.balance_cents) == (78_412, 78_412, 0)
        held = store.balance(typo)
        assert held is not None and [(m.paid_cents, m.unapplied_cents) for m in held.months] == [(0, 0)]
        assert store.payer_unapplied() == {}
        [unmatched] = store.discrepancies(kind="unmatched_payment")
        assert (unmatched.account_id, unmatched.status, unmatched.resolved_by) == (typo, "resolved", f"{typo}-apply")
        assert store.discrepancies(open_only=True) == []

    posted = [m for m in consume_all(settings.kafka_bootstrap_servers or "", settings.topics.payments)
              if m.key == member.encode()]
    [derived] = [codec.decode_input(m.value) for m in posted]
    assert isinstance(derived, PaymentReceived)
    assert (derived.event_id, derived.payment_id, derived.causation_id, derived.source) == (
        f"{typo}-apply:payment", "CA-1", f"{typo}-apply", "benefits-ledger")
    assert posted[0].partition == partition_for(member.encode(), settings.partitions)

    report = verify(ledger.dsn, settings.plan)
    assert report.mismatches == []
