"""Payments the ledger posts itself survive the broker losing its log (issue 12, defect 2).

The ledger applies a cash application and writes the payment it posts to the outbox; the relay
publishes it and the broker acknowledges it; then the broker loses everything before the processor
has read the payment back. Upstream re-sends its input to the new broker: the cash application is now
a duplicate, so only the outbox can post that payment again. It does, because a row of the payments
stream counts as delivered only once the processor has seen its event come back.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path

from processor.app import open_ledger, run_services
from processor.embedded import EmbeddedBroker
from processor.settings import Settings
from replay.verify import verify
from tests.integration.support import UpProcess, wait_for
from tests.integration.test_cash_applied import FEB, _events
from tests.integration.test_pipeline import process_until


async def _relay_until_published(ledger: object) -> None:
    """Only the relay, until nothing in the outbox is unpublished (the processor is not running)."""
    stop = asyncio.Event()
    services = asyncio.create_task(run_services(ledger, stop, process=False))  # type: ignore[arg-type]
    watcher = ledger.store()  # type: ignore[attr-defined]
    try:
        for _ in range(600):
            if not await asyncio.to_thread(watcher.outbox_pending, 1):
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the relay did not publish the outbox")
    finally:
        stop.set()
        await services


def test_a_posted_payment_the_broker_lost_before_it_came_back_is_posted_again_on_the_new_log(
    settings_factory: Callable[..., Settings], tmp_path: Path,
) -> None:
    member, typo = f"M-{uuid.uuid4().hex[:6]}", f"X-{uuid.uuid4().hex[:6]}"
    events = _events(member, typo)
    first, second = EmbeddedBroker(), EmbeddedBroker()
    up: UpProcess | None = None
    try:
        first.start()
        settings = settings_factory(kafka_bootstrap_servers=first.bootstrap,
                                    consumer_group=f"loss-{uuid.uuid4().hex[:8]}", session_timeout_ms=3000,
                                    heartbeat_interval_ms=1000)
        with open_ledger(settings) as ledger:
            assert ledger.log_id == first.cluster_id
            store = ledger.store()
            with ledger.publisher() as pub:
                sent = pub.publish(events)
            # 1. the processor applies everything; the payment it posts waits in the outbox
            asyncio.run(process_until(ledger, sent, relay=False))
            [(_, derived)] = store.outbox_undelivered(10)
            assert derived.event_id == f"{typo}-apply:payment"
            # 2. the relay publishes it and the broker acknowledges it ...
            asyncio.run(_relay_until_published(ledger))
            assert store.outbox_pending(10) == []
            assert [r.event_id for _, r in store.outbox_undelivered(10)] == [derived.event_id], (
                "published is not delivered")
            bal = store.balance(member)
            assert bal is not None
            assert [m.paid_cents for m in bal.months if m.coverage_month == FEB] == [0], (
                "the posted payment has not been read back yet")
            before = store.counts()

        # 3. ... and loses it: a memory broker restarted is a new, empty log
        first.stop()
        second.start()
        settings = settings.model_copy(update={"kafka_bootstrap_servers": second.bootstrap})
        with open_ledger(settings) as ledger:
            assert ledger.log_id == second.cluster_id != first.cluster_id
            store = ledger.store()
            with ledger.publisher() as pub:  # upstream re-sends its input
                assert pub.publish(events) == sent
            up = UpProcess(settings, tmp_path)
            up.start()
            everything = before.received + sent + 1  # the re-sent input, and the payment posted again
            wait_for(lambda: store.counts().received >= everything, up, "the posted payment to come back")
            wait_for(lambda: not store.outbox_undelivered(1), up, "the posted payment to be delivered")
            assert up.stop() == 0, up.log_tail()

            counts = store.counts()
            assert counts.received == everything == counts.applied + counts.duplicates + counts.dead_lettered
            assert counts.duplicates == sent, "every re-sent input record is a duplicate"
            assert (counts.applied, counts.dead_lettered) == (before.applied + 1, 0), "the payment applied once"
            bal = store.balance(member)
            assert bal is not None
            [feb] = [m for m in bal.months if m.coverage_month == FEB]
            assert (feb.billed_cents, feb.paid_cents, feb.balance_cents) == (78_412, 78_412, 0)
            assert store.payer_unapplied() == {}
            assert store.discrepancies(open_only=True) == []
            assert verify(ledger.dsn, settings.plan).mismatches == []
    finally:
        if up is not None:
            up.stop()
        first.stop()
        second.stop()
