"""Poison records on the real broker and PostgreSQL: each ends on the dead-letter topic with its reason,
the partition goes on, `up` neither crashes nor crash-loops, and the counts add up.

Every record of issue 12's list is produced straight onto an input topic (past the publisher's checks),
between good records of the same account and partition. The unit side (every field of every type, at
and past each bound) is tests/faults/test_poison_bounds.py.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
import pytest

from events import codec
from events.money import AMOUNT_CENTS_MAX
from events.types import PremiumBilled
from processor.app import open_ledger
from processor.batch import partition_for
from processor.dlq import REFERENCE_HEADER
from processor.settings import Settings
from replay.verify import verify
from tests.e2e.test_cli import base_env, run_cli
from tests.integration.support import UpProcess, consume_all, wait_for
from tests.integration.test_pipeline import JAN, T0, _events_for

ACCOUNT = "M-POISON-1"
OVERFLOW = "M-POISON-SUM"


def _payment(**changes: Any) -> bytes:
    """A payment of ACCOUNT as wire JSON with some fields changed (possibly to values no struct allows)."""
    _, _, _, pay = _events_for(ACCOUNT)
    data = json.loads(codec.encode(pay))
    data.update(event_id=f"poison-{uuid.uuid4().hex[:8]}", payment_id=f"P-{uuid.uuid4().hex[:8]}")
    data.update(changes)
    return json.dumps(data).encode()


def _poison() -> list[tuple[str, str, bytes, bytes, str]]:
    """(name, topic field, key, value, what the dead letter's reason says) of every poison record."""
    _, _, bill, _ = _events_for(ACCOUNT)
    bill_data = json.loads(codec.encode(bill))
    key = ACCOUNT.encode()
    nested = _payment()[:-1] + b',"extra":' + b"[" * 1000 + b"]" * 1000 + b"}"
    return [
        ("amount 2^63", "payments", key, _payment(amount_cents=2**63),
         "amount_cents: 9223372036854775808 is out of range"),
        ("amount 10^30", "payments", key, _payment(amount_cents=10**30), "out of range"),
        ("first of two 2^62+1", "payments", key, _payment(amount_cents=2**62 + 1), "out of range"),
        ("second of two 2^62+1", "payments", key, _payment(amount_cents=2**62 + 1), "out of range"),
        ("NUL in account_id", "payments", b"M-POI\x00SON", _payment(account_id="M-POI\x00SON"),
         "account_id: control character U+0000"),
        ("NUL in source", "payments", key, _payment(source="bank\x00820"), "source: control character U+0000"),
        ("escape in payer_id", "payments", key, _payment(payer_id="AG\x1b[31m"), "payer_id: control character U+001B"),
        ("8 KB account_id", "payments", b"A" * 8192, _payment(account_id="A" * 8192),
         "account_id: 8,192 characters, more than 256"),
        ("8 KB event_id", "payments", key, _payment(event_id="E" * 8192), "event_id: 8,192 characters"),
        ("coverage_month 9999-12-01", "billing", key,
         json.dumps({**bill_data, "event_id": "poison-bill-9999", "coverage_month": "9999-12-01"}).encode(),
         "coverage_month: 9999-12-01 is outside 1900-01-01 .. 2199-12-31"),
        ("day_closed 9999-12-31", "control", b"*",
         json.dumps({"type": "day_closed", "event_id": "poison-day", "account_id": "*", "effective_on": "9999-12-31",
                     "occurred_at": "2026-01-05T09:00:00Z", "business_date": "9999-12-31"}).encode(),
         "is outside 1900-01-01 .. 2199-12-31"),
        ("JSON nested 1000 deep", "payments", key, nested, "nested deeper than 32"),
        ("invalid record of 2 MB", "payments", key, _payment(source="x" * (2 * 1024 * 1024)),
         "larger than 1,048,576 bytes (record_bytes_max)"),
        ("2 MB of garbage", "payments", key, b"\xff" * (2 * 1024 * 1024), "record_bytes_max"),
    ]


@pytest.fixture
def up_settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory(consumer_group=f"poison-{uuid.uuid4().hex[:8]}", session_timeout_ms=3000,
                            heartbeat_interval_ms=1000)


@pytest.fixture
def up_process(up_settings: Settings, tmp_path: Path) -> Iterator[UpProcess]:
    up = UpProcess(up_settings, tmp_path)
    try:
        yield up
    finally:
        up.stop()


def test_each_poison_record_is_dead_lettered_with_its_reason_and_the_partition_goes_on(
    up_settings: Settings, up_process: UpProcess,
) -> None:
    settings = up_settings
    rate, enroll, bill, pay = _events_for(ACCOUNT)
    poison = _poison()
    near = AMOUNT_CENTS_MAX - 1
    fit = 1000  # 1000 bills of $9,999,999,999.99 fit a month; the 1001st would take it past 10^15 cents
    sums = [PremiumBilled(event_id=f"sum-{i}", account_id=OVERFLOW, effective_on=JAN, occurred_at=T0,
                          bill_id=f"B-SUM-{i}", coverage_month=JAN, plan="UMP-CLASSIC", tier="EMP",
                          amount_cents=near, due_on=JAN) for i in range(fit + 1)]
    with open_ledger(settings) as ledger:
        store = ledger.store()
        with ledger.publisher(max_request_size=8 * 1024 * 1024) as pub:  # a producer that allows big records
            before = pub.publish([rate, enroll, bill])
            for _name, topic, key, value, _reason in poison:
                partition = None if key == b"*" else partition_for(key, settings.partitions)
                pub.send_raw(getattr(settings.topics, topic), value=value, key=key, partition=partition)
            after = pub.publish([pay, *sums])
        total = before + len(poison) + after

        up_process.start()
        wait_for(lambda: store.counts().received >= total, up_process, f"all {total} records")
        up_process.check_alive()

        counts = store.counts()
        assert counts.received == total == counts.applied + counts.duplicates + counts.dead_lettered
        assert counts.dead_lettered == len(poison) + 1, "every poison record, and the bill past the month's bound"

        # the partition went on: the payment after the poison is applied and pays the month
        balance = store.balance(ACCOUNT)
        assert balance is not None and balance.months[0].paid_cents == pay.amount_cents
        sums_month = store.balance(OVERFLOW)
        assert sums_month is not None and sums_month.months[0].billed_cents == fit * near

        # every poison record is in the dead_letter table with its reason and its bytes, whole
        letters = store.dead_letters(limit=100)
        by_raw = {hashlib.sha256(d.raw).hexdigest(): d for d in letters}
        for name, _topic, _key, value, reason in poison:
            letter = by_raw.get(hashlib.sha256(value).hexdigest())
            assert letter is not None, f"{name} is not dead-lettered"
            said = f"{letter.field}: {letter.reason.removeprefix('undecodable: ')}"  # as `deadletter list` shows it
            assert reason in said, (name, said)
            assert "\x00" not in letter.reason and len(letter.reason) <= 2000
        [past_sum] = [d for d in letters if d.event_id == f"sum-{fit}"]
        assert "beyond the ledger's bound" in past_sum.reason and past_sum.field == "amount_cents"

        # ... and on the dead-letter topic: whole, or by reference when too large for the topic
        on_topic = consume_all(ledger.bootstrap, settings.topics.dead_letter)
        assert len(on_topic) == len(poison) + 1
        referenced = [m for m in on_topic if dict(m.headers).get(REFERENCE_HEADER) == b"1"]
        assert len(referenced) == 2, "the two records over 1 MB"
        for m in referenced:
            ref = json.loads(m.value)["dead_letter_reference"]
            assert set(ref) >= {"topic", "partition", "offset", "sha256", "reason", "bytes"}
            stored = [d for d in letters if (d.topic, d.partition, d.offset) == (ref["topic"], ref["partition"],
                                                                                  ref["offset"])]
            assert len(stored) == 1 and hashlib.sha256(stored[0].raw).hexdigest() == ref["sha256"]
            assert len(stored[0].raw) == ref["bytes"] > 2 * 1024 * 1024 - 1
        whole = {hashlib.sha256(m.value).hexdigest() for m in on_topic if m not in referenced}
        assert {hashlib.sha256(v).hexdigest() for _, _, _, v, _ in poison if len(v) < 1024 * 1024} <= whole

        # the archive holds no poison: its JSON view reads, and replay equals the live books
        with psycopg.connect(ledger.dsn) as conn:
            sources = conn.execute("SELECT count(*), count(DISTINCT body->>'source') FROM archive_json").fetchone()
        assert sources is not None and sources[0] == counts.applied
        report = verify(ledger.dsn, settings.plan)
        assert report.mismatches == [] and report.events_replayed == counts.applied

        # no crash loop: a restart starts, applies nothing again, and goes on with new records
        assert up_process.stop() == 0, up_process.log_tail()
        up_process.start()
        late = PremiumBilled(event_id="late-bill", account_id=ACCOUNT, effective_on=date(2026, 2, 1),
                             occurred_at=T0, bill_id="B-LATE", coverage_month=date(2026, 2, 1), plan="UMP-CLASSIC",
                             tier="EMP", amount_cents=78_412, due_on=date(2026, 2, 1))
        with ledger.publisher() as pub:
            pub.publish([late])
        wait_for(lambda: store.counts().received >= total + 1, up_process, "the record after the restart")
        again = store.counts()
        assert (again.applied, again.dead_lettered) == (counts.applied + 1, counts.dead_lettered)
        assert up_process.stop() == 0, up_process.log_tail()


def test_publish_refuses_poison_lines_naming_file_line_and_field_and_publishes_the_rest(
    settings_factory: Callable[..., Settings], tmp_path: Path,
) -> None:
    settings = settings_factory()
    _, _, _, pay = _events_for(ACCOUNT)
    good = codec.encode(pay).decode()
    lines = [good, _payment(amount_cents=2**63).decode(), json.dumps(json.loads(_payment(account_id="M\x00X")))]
    path = tmp_path / "payments.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with open_ledger(settings) as ledger:
        env = base_env(tmp_path, LEDGER_DATABASE_URL=ledger.dsn, LEDGER_KAFKA_BOOTSTRAP_SERVERS=ledger.bootstrap,
                       **{f"LEDGER_TOPICS__{k.upper()}": v for k, v in settings.topics.model_dump().items()})
        run = run_cli(["publish", str(path)], env, tmp_path, timeout=60)
        assert run.returncode == 1, run.stderr
        assert f"{path}:2: amount_cents: 9223372036854775808 is out of range" in run.stderr
        assert f"{path}:3: account_id: control character U+0000" in run.stderr
        assert "published 1 events" in run.stdout
        records = consume_all(ledger.bootstrap, settings.topics.payments)
        assert [codec.decode_input(m.value).event_id for m in records] == [pay.event_id]
