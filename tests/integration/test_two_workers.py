"""The production shape on the embedded stack: two processors in one consumer group and a separate relay
(docker-compose.yml runs the same commands). The group splits the partitions; when one worker dies the
other takes its partitions over, and the books are still exact: every record once, exactly the injected
discrepancies, the same books as a pure in-memory fold of the same records.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from events import codec
from processor.app import open_ledger
from processor.batch import Record
from processor.entrypoints.demo import generate
from processor.settings import PlanSettings, Settings
from tests.integration.support import (
    UpProcess,
    assert_same_books,
    consume_all,
    fold_in_memory,
    wait_for,
)


def assigned_partitions(proc: UpProcess) -> set[int]:
    """Partitions a worker logged as assigned to it, over its current run."""
    found: set[int] = set()
    for line in proc.log_path().read_text(errors="replace").splitlines():
        match = re.search(r"partitions assigned: ([\d,]+)", line)
        if match:
            found |= {int(p) for p in match.group(1).split(",")}
    return found


def _fold_order_evidence(dsn: str, detected: Counter[tuple], expected: Counter[tuple]) -> str:
    """What to look at when the findings differ: for each account concerned, the order its events and its
    partition's business days were applied in (a finding raised too early means a business day was folded
    ahead of something made before it)."""
    lines = [f"unexpected: {dict(detected - expected)}", f"missing: {dict(expected - detected)}"]
    accounts = sorted({row[1] for row in (detected - expected) + (expected - detected)})[:3]
    with psycopg.connect(dsn) as conn:
        for account in accounts:
            lines.append(f"applied order of {account} and its partition's business days (seq, topic, offset, type, id)")
            lines.extend(f"  {row}" for row in conn.execute(
                "SELECT seq, topic, \"offset\", event_type, event_id FROM archive WHERE account_id = %s"
                " OR (event_type = 'day_closed' AND partition = (SELECT partition FROM archive WHERE account_id = %s"
                " LIMIT 1)) ORDER BY seq", (account, account)))
    return "\n".join(lines)


# The whole program is published at once, so the ledger's remittance line reports come back after the
# program's later business days: with a lines window longer than the program, each remittance is judged
# once its lines are all in, whenever that is (the demo itself waits for them instead: demo/run.py).
LINES_DAYS = 400


@pytest.fixture
def group_settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory(consumer_group=f"pair-{uuid.uuid4().hex[:8]}", batch_events_max=2000,
                            session_timeout_ms=3000, heartbeat_interval_ms=1000,
                            plan=PlanSettings(remittance_lines_days=LINES_DAYS))


@pytest.fixture
def workers(group_settings: Settings, tmp_path: Path) -> Iterator[tuple[UpProcess, UpProcess, UpProcess]]:
    processor = ("up", "--role", "processor")
    a = UpProcess(group_settings, tmp_path, processor, "worker-a")
    b = UpProcess(group_settings, tmp_path, processor, "worker-b")
    relay = UpProcess(group_settings, tmp_path, ("up", "--role", "relay"), "relay")
    for proc in (a, b, relay):
        proc.env["LEDGER_PLAN__REMITTANCE_LINES_DAYS"] = str(LINES_DAYS)
    try:
        yield a, b, relay
    finally:
        for proc in (a, b, relay):
            proc.stop()


def test_two_workers_split_the_partitions_and_one_takes_over_when_the_other_dies(
    group_settings: Settings, workers: tuple[UpProcess, UpProcess, UpProcess],
) -> None:
    settings = group_settings
    a, b, relay = workers
    program = generate(members=900, months=6, seed=21)
    events = [e for _, phase in program.phases for e in phase]
    with open_ledger(settings) as ledger:
        store = ledger.store()
        for proc in (a, b, relay):
            proc.start()
        # both workers are in the group and own partitions before anything is published
        wait_for(lambda: bool(assigned_partitions(a)) and bool(assigned_partitions(b))
                 and not (assigned_partitions(a) & assigned_partitions(b)), a,
                 "the two workers to split the partitions", timeout=60)
        assert assigned_partitions(a) | assigned_partitions(b) == set(range(settings.partitions))

        with ledger.publisher() as pub:
            pub.publish(events)
            total = pub.records_sent

        def received() -> int:
            return store.counts().received

        wait_for(lambda: received() >= total * 0.2, b, "a fifth of the records")
        a.sigkill()
        total += program.derived  # a payment per cash application, a report per remittance line
        wait_for(lambda: received() >= total, b, f"worker b to take over and finish all {total} records")
        wait_for(lambda: assigned_partitions(b) == set(range(settings.partitions)), b,
                 "worker b to own every partition")
        wait_for(lambda: not store.outbox_pending(1), relay, "the relay to drain the outbox")

        counts = store.counts()
        assert counts.received == counts.applied == total  # nothing duplicated or dead in this program
        with psycopg.connect(ledger.dsn) as conn:
            archived, distinct_keys = conn.execute(
                "SELECT count(*), count(DISTINCT dedupe_key) FROM archive").fetchone() or (0, 0)
            archive_order = [(t, p, o) for t, p, o in conn.execute(
                'SELECT topic, partition, "offset" FROM archive ORDER BY seq')]
        assert archived == distinct_keys == total

        # exactly what was injected, and how it ended, even across a takeover
        detected = Counter((d.kind, d.account_id, d.coverage_month, d.status) for d in store.discrepancies(limit=10**6))
        assert detected == program.expected_rows, _fold_order_evidence(ledger.dsn, detected, program.expected_rows)

        records = [Record(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp)
                   for m in consume_all(ledger.bootstrap, *settings.topics.inputs())]
        assert_same_books(store, fold_in_memory(settings, records, archive_order))

        on_topic = {codec.decode_output(m.value).event_id
                    for m in consume_all(ledger.bootstrap, settings.topics.discrepancies)}
        with psycopg.connect(ledger.dsn) as conn:
            outbox = {str(r[0]) for r in conn.execute("SELECT event_id FROM outbox WHERE stream = 'discrepancies'")}
        assert on_topic == outbox
        assert {f"{d.discrepancy_id}:opened" for d in store.discrepancies(limit=10**6)} <= on_topic
