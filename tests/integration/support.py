"""Helpers the integration tests share: reading whole topics, running the CLI as a subprocess, and
comparing the live books with a pure in-memory fold of the same records."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from processor.batch import BatchProcessor, Record
from processor.settings import Settings
from projections.memory import MemoryStore
from projections.model import DiscrepancyRow, LedgerStore
from tests.conftest import ledger_keys_env

REPO_ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 120.0


def consume_all(bootstrap: str, *topics: str) -> list[ConsumerRecord]:
    """Every record of the topics: read until each partition's position reaches the high-water mark
    of a fetch response (end_offsets is wrong on Tansu), or two polls in a row come back empty."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        deadline = time.monotonic() + WAIT_S
        tps: list[TopicPartition] = []
        for topic in topics:
            partitions = consumer.partitions_for_topic(topic)
            while not partitions:
                assert time.monotonic() < deadline, f"topic {topic} has no partitions"
                time.sleep(0.2)
                partitions = consumer.partitions_for_topic(topic)
            tps.extend(TopicPartition(topic, p) for p in sorted(partitions))
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list[ConsumerRecord] = []
        empty = 0
        while empty < 2:
            assert time.monotonic() < deadline, f"reading {topics} did not finish"
            batch = consumer.poll(timeout_ms=500, max_records=20_000)
            for records in batch.values():
                out.extend(records)
            empty = 0 if batch else empty + 1
            highwater = [consumer.highwater(tp) for tp in tps]
            if all(hw is not None and consumer.position(tp) >= hw
                   for tp, hw in zip(tps, highwater, strict=True)):
                break
        return out
    finally:
        consumer.close()


class UpProcess:
    """``python -m processor.cli up`` against the test broker and database."""

    def __init__(self, settings: Settings, workdir: Path, args: tuple[str, ...] = ("up",),
                 name: str = "up") -> None:
        self.workdir = workdir
        self.args = args
        self.name = name
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
        self.env.update({
            "PYTHONPATH": str(REPO_ROOT),
            "LEDGER_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers or "",
            "LEDGER_DATABASE_URL": settings.database_url or "",
            "LEDGER_DATA_DIR": str(settings.data_dir),
            "LEDGER_PARTITIONS": str(settings.partitions),
            "LEDGER_CONSUMER_GROUP": settings.consumer_group,
            "LEDGER_BATCH_EVENTS_MAX": str(settings.batch_events_max),
            "LEDGER_SESSION_TIMEOUT_MS": str(settings.session_timeout_ms),
            "LEDGER_HEARTBEAT_INTERVAL_MS": str(settings.heartbeat_interval_ms),
            **{f"LEDGER_TOPICS__{k.upper()}": v for k, v in settings.topics.model_dump().items()},
            **ledger_keys_env(),
        })
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        self.runs += 1
        with self.log_path().open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "processor.cli", *self.args], env=self.env, cwd=self.workdir,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )

    def check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(
                f"`benefits-ledger up` exited with {self.proc.returncode}:\n{self.log_tail()}")

    def log_path(self) -> Path:
        return self.workdir / f"{self.name}-{self.runs}.log"

    def log_tail(self) -> str:
        log = self.log_path()
        return log.read_text(errors="replace")[-4000:] if log.exists() else ""

    def sigkill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> int | None:
        """SIGTERM (graceful), then SIGKILL after 20 s. Safe to call on a dead process."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            return None


def wait_for(predicate: Callable[[], bool], up: UpProcess, what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        up.check_alive()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{up.log_tail()}")
        time.sleep(0.02)


def comparable(row: DiscrepancyRow) -> tuple[Any, ...]:
    return (row.discrepancy_id, row.kind, row.account_id, row.coverage_month, row.payer_id,
            row.expected_cents, row.actual_cents, tuple(row.cause_event_ids), row.explanation, row.action,
            row.actor, row.status, row.opened_by, row.resolved_by)


def fold_in_memory(settings: Settings, records: list[Record], archive_order: list[tuple[str, int, int]]
                   ) -> MemoryStore:
    """The pure fold of ``records``: each partition in offset order, interleaved as applied live."""
    seq = {pos: i for i, pos in enumerate(archive_order)}
    by_tp: dict[tuple[str, int], list[Record]] = {}
    for r in records:
        by_tp.setdefault((r.topic, r.partition), []).append(r)
    ranked: list[tuple[float, int, Record]] = []
    for recs in by_tp.values():
        recs.sort(key=lambda r: r.offset)
        rank = -1.0
        for r in recs:
            applied = seq.get((r.topic, r.partition, r.offset))
            # an applied record takes its archive place; any other stays right behind its predecessor
            rank = float(applied) if applied is not None else rank + 1e-6
            ranked.append((rank, r.offset, r))
    ranked.sort(key=lambda t: (t[0], t[1]))
    ordered = [r for _, _, r in ranked]

    store = MemoryStore()
    fixed = datetime(2026, 12, 31, tzinfo=UTC)
    processor = BatchProcessor(store, log_id="memory", plan=settings.plan, topics=settings.topics,
                               partitions=settings.partitions, clock=lambda: fixed)
    for i in range(0, len(ordered), 2000):
        result = processor.process(ordered[i:i + 2000])
        store.commit_batch(result.write)
        processor.committed(result)
    return store


def assert_same_books(live: LedgerStore, memory: MemoryStore) -> None:
    live_rows = sorted(comparable(r) for r in live.discrepancies(limit=10**6))
    mem_rows = sorted(comparable(r) for r in memory.discrepancies(limit=10**6))
    assert len(live_rows) == len(mem_rows)
    assert live_rows == mem_rows
    assert live.summary() == memory.summary()
    assert live.payer_unapplied() == memory.payer_unapplied()
    accounts = sorted({a.account_id for a in memory.archive if a.account_id != "*"})
    assert accounts
    for account_id in accounts:
        got, want = live.balance(account_id), memory.balance(account_id)
        assert got is not None and want is not None, account_id
        assert got.months == want.months, account_id
        assert got.coverages == want.coverages, account_id
