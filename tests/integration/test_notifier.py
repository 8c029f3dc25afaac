"""The notifier end to end: events through the real broker, processor and relay, the discrepancy topic
consumed by the notifier in its own group, a digest per coordinator on a real local SMTP server
(aiosmtpd); and a notice issued from the command line folded by the processor."""

from __future__ import annotations

import asyncio
import email
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from events.types import InputEvent
from processor.app import Ledger, open_ledger, run_services
from processor.settings import Settings
from tests.unit.builders import bill, day, enroll, pay, rate

MAR = date(2026, 3, 1)
RATE = 78_412
REPO_ROOT = Path(__file__).resolve().parents[2]


def program() -> list[InputEvent]:
    """AG-001: M1 $100.00 short, M2 $20.00 over, M3 unpaid past its grace period, M5 billed the wrong rate
    (billing's to fix, not the coordinator's). AG-002: M4 $50.00 short."""
    events: list[InputEvent] = [rate(RATE, event_id="rate", month_from=MAR)]
    for m, agency in (("M1", "AG-001"), ("M2", "AG-001"), ("M3", "AG-001"), ("M5", "AG-001"), ("M4", "AG-002")):
        events += [enroll(event_id=f"enr-{m}", account=m, begin=MAR, agency=agency),
                   bill(RATE + (3_000 if m == "M5" else 0), month=MAR, account=m, event_id=f"bill-{m}", due_on=MAR,
                        agency=agency)]
    events += [pay(RATE - 10_000, month=MAR, account="M1", event_id="pay-M1"),
               pay(RATE + 2_000, month=MAR, account="M2", event_id="pay-M2"),
               pay(RATE + 3_000, month=MAR, account="M5", event_id="pay-M5"),
               pay(RATE - 5_000, month=MAR, account="M4", event_id="pay-M4", payer="AG-002"),
               day(date(2026, 4, 15), event_id="day-0415")]
    return events


class Sink:
    """An aiosmtpd handler that keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), email.message_from_bytes(envelope.content)))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp() -> Iterator[tuple[Sink, int]]:
    from aiosmtpd.controller import Controller

    sink, port = Sink(), free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()


async def process(ledger: Ledger, received: int) -> None:
    """Processor and relay until every record is applied and the outbox is published."""
    stop = asyncio.Event()
    services = asyncio.create_task(run_services(ledger, stop))
    watcher = ledger.store()
    deadline = time.monotonic() + 90
    try:
        while True:
            if services.done():
                services.result()
            counts = await asyncio.to_thread(watcher.counts)
            pending = await asyncio.to_thread(watcher.outbox_pending, 1)
            if counts.received >= received and not pending:
                break
            assert time.monotonic() < deadline, "the processor and relay did not finish"
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await services


async def digests(ledger: Ledger, clock: Callable[[], datetime]) -> tuple[list[Any], Any]:
    notifier = ledger.notifier(clock=clock)
    await notifier.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            await notifier.run_once()
            sent = await notifier.maybe_send()
            if sent or (notifier.caught_up and time.monotonic() > deadline - 50):
                return sent, notifier.store.digests()
            assert time.monotonic() < deadline, "the notifier never caught up"
    finally:
        await notifier.stop()


def test_each_coordinator_gets_a_digest_of_exactly_the_agencys_open_actions(
    settings_factory: Callable[..., Settings], smtp: tuple[Sink, int], tmp_path: Path,
) -> None:
    sink, port = smtp
    settings = settings_factory(notifier={"smtp_host": "127.0.0.1", "smtp_port": port, "sender": "ledger@state.gov",
                                          "coordinators": {"AG-001": "coord-1@agency.gov",
                                                           "AG-002": "coord-2@agency.gov"},
                                          "digest_hour": 7})
    events = program()
    at_noon = lambda: datetime(2026, 4, 20, 12, tzinfo=UTC)  # noqa: E731
    with open_ledger(settings) as ledger:
        with ledger.publisher() as pub:
            pub.publish(events)
        received = sum(settings.partitions if type(e).BROADCAST else 1 for e in events)
        asyncio.run(process(ledger, received))
        store = ledger.store()
        open_rows = store.discrepancies(open_only=True)
        expected = {agency: sorted(d.discrepancy_id for d in open_rows if d.payer_id == agency
                                   and d.actor in ("agency_coordinator", "payroll")) for agency in ("AG-001", "AG-002")}
        assert {d.kind for d in open_rows if d.payer_id == "AG-001"} == {
            "underpaid", "overpaid", "missing_payment", "wrong_rate"}
        assert len(expected["AG-001"]) == 3 and len(expected["AG-002"]) == 1  # wrong_rate is billing's

        sent, recorded = asyncio.run(digests(ledger, at_noon))
        assert sorted(d.agency_id for d in sent) == ["AG-001", "AG-002"]
        by_rcpt = {rcpt[0]: msg for _, rcpt, msg in sink.messages}
        assert sorted(by_rcpt) == ["coord-1@agency.gov", "coord-2@agency.gov"] and len(sink.messages) == 2
        for agency, address in (("AG-001", "coord-1@agency.gov"), ("AG-002", "coord-2@agency.gov")):
            msg = by_rcpt[address]
            assert msg["From"] == "ledger@state.gov" and agency in msg["Subject"]
            assert sorted("".join(msg["X-Ledger-Discrepancies"].split()).split(",")) == expected[agency]
            html = next(p for p in msg.walk() if p.get_content_type() == "text/html").get_payload(decode=True)
            listed = sorted(x.split('"')[1] for x in html.decode().split("data-id=")[1:])
            assert listed == expected[agency]  # exactly the agency's open actions, nothing of the other
        assert {(d.agency_id, d.digest_on, tuple(sorted(d.discrepancy_ids))) for d in recorded} == {
            ("AG-001", date(2026, 4, 20), tuple(expected["AG-001"])), ("AG-002", date(2026, 4, 20),
                                                                     tuple(expected["AG-002"]))}
        # a restarted notifier resumes from its stored positions and sends nothing twice the same day
        again, _ = asyncio.run(digests(ledger, at_noon))
        assert again == [] and len(sink.messages) == 2

        # a notice issued from the command line is an event the processor folds on the agency's account
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
        env.update({"PYTHONPATH": str(REPO_ROOT), "LEDGER_KAFKA_BOOTSTRAP_SERVERS": ledger.bootstrap,
                    "LEDGER_DATABASE_URL": ledger.dsn, "LEDGER_DATA_DIR": str(tmp_path),
                    "LEDGER_PARTITIONS": str(settings.partitions),
                    **{f"LEDGER_TOPICS__{k.upper()}": v for k, v in settings.topics.model_dump().items()}})
        script = Path(sys.executable).with_name("benefits-ledger")
        done = subprocess.run([str(script), "notices", "--payer", "AG-001", "--out", str(tmp_path / "n"), "--issue",
                               "--json"], env=env, capture_output=True, text=True, timeout=180, check=False,
                              stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr
        (notice,) = json.loads(done.stdout)["notices"]
        assert sorted(notice["discrepancy_ids"]) == expected["AG-001"]
        asyncio.run(process(ledger, received + 1))
        account = store.load_accounts(["payer:AG-001"])["payer:AG-001"]
        assert [(n.notice_id, sorted(n.discrepancy_ids)) for n in account.notices] == [
            (notice["notice_id"], expected["AG-001"])]
