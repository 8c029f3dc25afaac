"""Dead letters re-submitted after a fix: the reversal of a payment that had not arrived yet."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from events.adapters.deadletter import resubmit, select
from events.types import PaymentReversed
from processor.app import open_ledger
from processor.settings import Settings
from tests.e2e.test_cli import base_env, run_cli
from tests.integration.test_pipeline import JAN, T0, _events_for, process_until


def test_a_dead_letter_retried_after_the_fix_is_applied_and_a_second_retry_is_a_duplicate(
    settings_factory: Callable[..., Settings], tmp_path: Path,
) -> None:
    settings = settings_factory()
    account = "M-DLRETRY-1"
    rate, enroll, bill, pay = _events_for(account)
    reversal = PaymentReversed(event_id=f"{account}-rev", account_id=account, effective_on=JAN, occurred_at=T0,
                               payment_id=pay.payment_id, reason="returned ACH")
    with open_ledger(settings) as ledger:
        store = ledger.store()
        with ledger.publisher() as pub:
            pub.publish([reversal])  # the payment it reverses has not arrived: dead-lettered
        asyncio.run(process_until(ledger, 1, relay=False))
        [letter] = store.dead_letters()
        assert letter.event_id == reversal.event_id and "unknown" in letter.reason

        env = base_env(tmp_path, LEDGER_DATABASE_URL=ledger.dsn, LEDGER_KAFKA_BOOTSTRAP_SERVERS=ledger.bootstrap,
                       **{f"LEDGER_TOPICS__{k.upper()}": v for k, v in settings.topics.model_dump().items()})
        listed = run_cli(["deadletter", "retry", "--dry-run", "--json"], env, tmp_path, timeout=60)
        assert listed.returncode == 0, listed.stderr
        assert [d["event_id"] for d in listed.json()["resubmitted"]] == [reversal.event_id]

        with ledger.publisher() as pub:
            sent = pub.publish([rate, enroll, bill, pay])  # the fix: the payment arrives
        asyncio.run(process_until(ledger, 1 + sent, relay=False))

        with ledger.publisher() as pub:
            [done] = resubmit(select(store.dead_letters(), event_id=reversal.event_id), pub)
        assert (done.topic, done.event_id) == (settings.topics.payments, reversal.event_id)
        asyncio.run(process_until(ledger, 2 + sent, relay=False))
        counts = store.counts()
        assert (counts.applied, counts.duplicates, counts.dead_lettered) == (1 + sent, 0, 1)
        balance = store.balance(account)
        assert balance is not None and balance.months[0].paid_cents == 0, "the payment is reversed"

        again = run_cli(["deadletter", "retry", "--json", "--event-id", reversal.event_id], env, tmp_path, timeout=60)
        assert again.returncode == 0, again.stderr
        asyncio.run(process_until(ledger, 3 + sent, relay=False))
        assert store.counts().duplicates == 1, "already applied: a retry is a duplicate, never applied twice"
