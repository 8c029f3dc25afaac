"""The two reference points of the throughput benchmark.

* :func:`faust_baseline` - what an idiomatic Faust service does: one agent, one ``INSERT ... ON CONFLICT``
  and one ``COMMIT`` per event. The worker runs as a ``faust worker`` subprocess built from a small
  generated module, so its event loop, signal handling and shutdown are Faust's own.
* :func:`ceiling` - the most this machine can move from the broker into PostgreSQL with no logic at all:
  one process, aiokafka ``getmany``, ``msgspec`` decode, ``COPY`` into a ``jsonb`` archive table in
  transactions of about 20k records.

Both report events per second from the first publish to the moment the last row is in PostgreSQL.
Tansu's end offsets are wrong (see ``/work/shared/BROKER.md``), so "done" is always decided by counting
rows in PostgreSQL, never by offsets.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import murmur2

Event = tuple[bytes, bytes]

SESSION_TIMEOUT_MS = 6000
HEARTBEAT_INTERVAL_MS = 1000
COPY_BATCH = 20_000
PUBLISH_BATCH_BYTES = 1 << 20
FAUST_READY_TIMEOUT_S = 120.0
FAUST_STOP_TIMEOUT_S = 30.0


def _log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _suffix() -> str:
    return uuid.uuid4().hex[:12]


# --------------------------------------------------------------------------------------------------------
# Synthetic events (baselines only; the pipeline uses the project's own generator)
# --------------------------------------------------------------------------------------------------------

_EVENT_TYPES: tuple[tuple[str, int], ...] = (
    ("premium_billed", 40),
    ("payment_received", 40),
    ("rate_changed", 5),
    ("enrollment_started", 8),
    ("enrollment_ended", 2),
    ("adjustment_posted", 5),
)
_PLANS = ("medical-ppo", "medical-hmo", "dental", "vision", "life-basic", "ltd")
_TIERS = ("employee", "employee+spouse", "employee+children", "family")


def synthetic_events(n: int, seed: int) -> list[Event]:
    """``n`` realistic JSON events, keyed by account id, deterministic for a seed."""
    rng = random.Random(seed)
    names = [name for name, _ in _EVENT_TYPES]
    weights = [weight for _, weight in _EVENT_TYPES]
    n_accounts = max(1, n // 20)
    accounts = [f"ACC-{seed:03d}-{i:07d}" for i in range(n_accounts)]
    base_day = date(2024, 1, 1)
    base_time = datetime(2024, 1, 1, tzinfo=UTC)
    out: list[Event] = []
    for i in range(n):
        account = accounts[rng.randrange(n_accounts)]
        kind = rng.choices(names, weights)[0]
        effective = base_day + timedelta(days=rng.randrange(365))
        amount = rng.randrange(1_500, 250_000)
        body: dict[str, Any] = {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "type": kind,
            "schema_version": 1,
            "account_id": account,
            "plan": rng.choice(_PLANS),
            "coverage_tier": rng.choice(_TIERS),
            "amount_cents": -amount if kind == "adjustment_posted" and rng.random() < 0.5 else amount,
            "currency": "USD",
            "effective_date": effective.isoformat(),
            "period": f"{effective.year:04d}-{effective.month:02d}",
            "occurred_at": (base_time + timedelta(seconds=i * 7 + rng.randrange(7))).isoformat(),
            "source": rng.choice(("payroll", "carrier-feed", "hr-portal", "lockbox")),
            "reference": f"REF{rng.randrange(10**9):09d}",
        }
        out.append((account.encode(), msgspec.json.encode(body)))
    return out


# --------------------------------------------------------------------------------------------------------
# Broker helpers
# --------------------------------------------------------------------------------------------------------


def partition_for(key: bytes, partitions: int) -> int:
    """The Java client's default partitioner (murmur2 of the key), as every Kafka client agrees on."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name=topic, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()


async def publish(bootstrap: str, topic: str, events: Sequence[Event], partitions: int) -> float:
    """Publish with ``send_batch`` (one producer, ~1 MiB batches per partition); returns seconds taken."""
    started = time.perf_counter()
    by_partition: list[list[Event]] = [[] for _ in range(partitions)]
    for key, value in events:
        by_partition[partition_for(key, partitions)].append((key, value))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_batch_size=PUBLISH_BATCH_BYTES, acks=1)
    await producer.start()
    try:
        futures: list[asyncio.Future[Any]] = []
        for partition, records in enumerate(by_partition):
            batch = producer.create_batch()
            for key, value in records:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        raise RuntimeError(f"record of {len(value)} bytes does not fit an empty batch")
            if batch.record_count():
                futures.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.perf_counter() - started


# --------------------------------------------------------------------------------------------------------
# PostgreSQL helpers
# --------------------------------------------------------------------------------------------------------


async def _count(conn: psycopg.AsyncConnection[Any], table: str) -> int:
    cur = await conn.execute(f"SELECT count(*) FROM {table}")
    row = await cur.fetchone()
    await conn.rollback()
    assert row is not None
    return int(row[0])


async def wait_for_rows(
    dsn: str,
    table: str,
    expected: int,
    timeout: float,
    alive: Any = None,
    interval: float = 0.02,
) -> float:
    """Poll ``count(*)`` until ``expected`` rows; returns ``time.perf_counter()`` at that moment.

    ``alive`` is an optional callable returning ``False`` when the thing filling the table has died.
    """
    deadline = time.monotonic() + timeout
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        count = 0
        while True:
            count = await _count(conn, table)
            if count >= expected:
                return time.perf_counter()
            if alive is not None and not alive():
                raise RuntimeError(f"{table}: writer died with {count}/{expected} rows applied")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{table}: {count}/{expected} rows after {timeout:.0f}s")
            await asyncio.sleep(interval)


# --------------------------------------------------------------------------------------------------------
# Faust baseline
# --------------------------------------------------------------------------------------------------------

_FAUST_MODULE = '''\
"""Generated by bench/_baselines.py: the idiomatic Faust baseline (one upsert + commit per event)."""
import os

import faust
import msgspec
import psycopg

DSN = os.environ["BENCH_DSN"]
TABLE = os.environ["BENCH_TABLE"]
UPSERT = (
    f"INSERT INTO {TABLE} (event_id, type, account_id, amount_cents, effective_date, body) "
    "VALUES (%s, %s, %s, %s, %s, %s::jsonb) "
    "ON CONFLICT (event_id) DO UPDATE SET type = EXCLUDED.type, account_id = EXCLUDED.account_id, "
    "amount_cents = EXCLUDED.amount_cents, effective_date = EXCLUDED.effective_date, body = EXCLUDED.body"
)

app = faust.App(
    os.environ["BENCH_APP_ID"],
    broker="kafka://" + os.environ["BENCH_BOOTSTRAP"],
    store="memory://",
    web_enabled=False,
    broker_session_timeout=6,
    broker_heartbeat_interval=1,
    consumer_auto_offset_reset="earliest",
)
events_topic = app.topic(
    os.environ["BENCH_TOPIC"],
    key_type=bytes,
    value_type=bytes,
    key_serializer="raw",
    value_serializer="raw",
    partitions=int(os.environ["BENCH_PARTITIONS"]),
)


@app.agent(events_topic)
async def apply_events(stream):
    conn = await psycopg.AsyncConnection.connect(DSN)
    try:
        async for value in stream:
            event = msgspec.json.decode(value)
            await conn.execute(
                UPSERT,
                (
                    event["event_id"],
                    event["type"],
                    event["account_id"],
                    event["amount_cents"],
                    event["effective_date"],
                    value.decode(),
                ),
            )
            await conn.commit()
    finally:
        await conn.close()


if __name__ == "__main__":
    app.main()
'''


def _stop_process(proc: subprocess.Popen[bytes], name: str, timeout: float) -> None:
    """SIGTERM (Faust's graceful shutdown), then SIGKILL if it does not exit in ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        _log(f"{name} did not stop in {timeout:.0f}s after SIGTERM; killing it")
        proc.kill()
        proc.wait(10)


def _die_with_parent() -> None:
    """``preexec_fn``: on Linux the worker gets SIGTERM if this process dies without stopping it."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


async def faust_baseline(bootstrap: str, dsn: str, topic: str, events: list[Event], partitions: int) -> float:
    """Events/s from first publish until every event is upserted by a Faust agent (one commit each).

    The worker is started and proven ready first (it applies one warm-up event, which also means it owns
    every partition), so the figure is steady-state processing, not group-join time.
    """
    suffix = _suffix()
    table = f"baseline_faust_{suffix}"
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(
            f"CREATE TABLE {table} (event_id text PRIMARY KEY, type text NOT NULL, account_id text NOT NULL,"
            " amount_cents bigint NOT NULL, effective_date date NOT NULL, body jsonb NOT NULL)"
        )
    await create_topic(bootstrap, topic, partitions)

    workdir = Path(tempfile.mkdtemp(prefix="bench-faust-"))
    module = workdir / "faust_baseline_app.py"
    module.write_text(_FAUST_MODULE)
    log_path = workdir / "worker.log"
    env = {
        **os.environ,
        "BENCH_BOOTSTRAP": bootstrap,
        "BENCH_DSN": dsn,
        "BENCH_TABLE": table,
        "BENCH_TOPIC": topic,
        "BENCH_PARTITIONS": str(partitions),
        "BENCH_APP_ID": f"bench-faust-{suffix}",
        "PYTHONUNBUFFERED": "1",
    }
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, str(module), "worker", "--loglevel", "warn"],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
    try:

        def alive() -> bool:
            return proc.poll() is None

        warmup = msgspec.json.encode(
            {
                "event_id": f"warmup-{suffix}",
                "type": "warmup",
                "account_id": "warmup",
                "amount_cents": 0,
                "effective_date": "2024-01-01",
            }
        )
        await publish(bootstrap, topic, [(b"warmup", warmup)], partitions)
        ready_started = time.perf_counter()
        await wait_for_rows(dsn, table, 1, FAUST_READY_TIMEOUT_S, alive, interval=0.1)
        _log(f"faust worker ready in {time.perf_counter() - ready_started:.1f}s")

        started = time.perf_counter()
        published = await publish(bootstrap, topic, events, partitions)
        _log(f"faust baseline: {len(events)} events published in {published:.2f}s")
        timeout = 60.0 + len(events) / 200.0
        finished = await wait_for_rows(dsn, table, len(events) + 1, timeout, alive)
        return len(events) / (finished - started)
    except Exception as exc:
        raise RuntimeError(f"faust baseline failed: {exc}\n--- worker log ---\n{_tail(log_path)}") from exc
    finally:
        await asyncio.to_thread(_stop_process, proc, "faust worker", FAUST_STOP_TIMEOUT_S)
        if proc.returncode not in (0, -signal.SIGTERM):
            _log(f"faust worker exited with {proc.returncode}; log tail:\n{_tail(log_path, 15)}")
        shutil.rmtree(workdir, ignore_errors=True)
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute(f"DROP TABLE IF EXISTS {table}")


# --------------------------------------------------------------------------------------------------------
# Ceiling
# --------------------------------------------------------------------------------------------------------


async def _ceiling(bootstrap: str, dsn: str, topic: str, events: list[Event], partitions: int) -> float:
    table = f"archive_ceiling_{_suffix()}"
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(f"CREATE TABLE {table} (event_id text NOT NULL, body jsonb NOT NULL)")
    await create_topic(bootstrap, topic, partitions)
    decoder = msgspec.json.Decoder()
    expected = len(events)
    try:
        started = time.perf_counter()
        published = await publish(bootstrap, topic, events, partitions)
        _log(f"ceiling: {expected} events published in {published:.2f}s")

        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
            max_partition_fetch_bytes=16 << 20,
            fetch_max_bytes=64 << 20,
        )
        await consumer.start()
        applied = 0
        try:
            consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
            await consumer.seek_to_beginning()
            async with await psycopg.AsyncConnection.connect(dsn) as conn:
                pending: list[tuple[str, str]] = []
                deadline = time.monotonic() + 60.0 + expected / 1000.0
                while applied < expected:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"ceiling: {applied}/{expected} rows applied")
                    fetched = await consumer.getmany(timeout_ms=50, max_records=COPY_BATCH)
                    for records in fetched.values():
                        for record in records:
                            value = record.value
                            assert value is not None
                            body = decoder.decode(value)
                            pending.append((body["event_id"], value.decode()))
                    if pending and (
                        len(pending) >= COPY_BATCH or not fetched or applied + len(pending) >= expected
                    ):
                        async with conn.cursor() as cur:
                            async with cur.copy(f"COPY {table} (event_id, body) FROM STDIN") as copy:
                                for row in pending:
                                    await copy.write_row(row)
                        await conn.commit()
                        applied += len(pending)
                        pending = []
                finished = time.perf_counter()
                total = await _count(conn, table)
        finally:
            await consumer.stop()
        if total != expected:
            raise RuntimeError(f"ceiling: {total} rows in {table}, expected {expected}")
        return expected / (finished - started)
    finally:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute(f"DROP TABLE IF EXISTS {table}")


def ceiling(bootstrap: str, dsn: str, topic: str, events: list[Event], partitions: int) -> float:
    """Events/s from first publish until all events are COPYed, with no logic, into a jsonb table."""
    return asyncio.run(_ceiling(bootstrap, dsn, topic, events, partitions))
