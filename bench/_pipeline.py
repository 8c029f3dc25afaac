"""The project's pipeline, publish to applied: processor + relay on the embedded broker and PostgreSQL.

The program is published from a separate process, as upstream systems do; the clock runs from the
moment it starts sending until the processor has taken every record.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from datetime import date
from pathlib import Path

from events.types import BROADCAST_ACCOUNT, DayClosed, Event
from processor.app import ensure_database, open_ledger, run_services
from processor.entrypoints.demo import generate
from processor.settings import Settings, TopicSettings

EVENTS_PER_MEMBER_YEAR = 38  # roughly, for the demo program's mix (FSA participants included)
REPO = Path(__file__).resolve().parent.parent


def program_events(n: int, seed: int) -> list[Event]:
    """The first n events of a realistic program, in business order."""
    program = generate(members=max(20, n // EVENTS_PER_MEMBER_YEAR + 20), months=12, seed=seed)
    events = [e for _, phase in program.phases for e in phase]
    return events[:n]


def topic_settings(suffix: str) -> TopicSettings:
    names = TopicSettings()
    return TopicSettings(**{f: f"{getattr(names, f)}.{suffix}" for f in TopicSettings.model_fields})


def records_for(events: list[Event], partitions: int) -> int:
    return sum(partitions if type(e).BROADCAST else 1 for e in events)


async def _measure(settings: Settings, suffix: str, n_events: int, seed: int) -> float:
    expected = records_for(program_events(n_events, seed), settings.partitions)
    with open_ledger(settings) as ledger:
        stop = asyncio.Event()
        services = asyncio.create_task(run_services(ledger, stop))
        watcher = ledger.store()

        async def until(target: int, timeout_s: float) -> None:
            deadline = time.monotonic() + timeout_s
            while (await asyncio.to_thread(watcher.counts)).received < target:
                if services.done():
                    services.result()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"pipeline stalled below {target} records")
                await asyncio.sleep(0.01)

        publisher = subprocess.Popen(
            [sys.executable, "-m", "bench._publish_worker", ledger.bootstrap, suffix,
             str(settings.partitions), str(n_events), str(seed)],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        try:
            # Warm up: the worker joins its group before the clock starts (the baselines do the same).
            with ledger.publisher() as warm_up:
                warm_up.publish([DayClosed(
                    event_id=f"warmup-{uuid.uuid4().hex}", account_id=BROADCAST_ACCOUNT,
                    effective_on=date(2025, 12, 31), occurred_at=time_now(),
                    business_date=date(2025, 12, 31), source="bench",
                )])
            await until(settings.partitions, 60)
            assert publisher.stdin is not None and publisher.stdout is not None
            await asyncio.to_thread(publisher.stdout.readline)  # generated its program
            start = time.perf_counter()
            publisher.stdin.write("go\n")
            publisher.stdin.flush()
            await until(settings.partitions + expected, 600)
            elapsed = time.perf_counter() - start
            sent = int((await asyncio.to_thread(publisher.stdout.readline)).strip())
            assert sent == expected, f"publisher sent {sent} records, expected {expected}"
            return expected / elapsed
        finally:
            publisher.kill()
            publisher.wait()
            stop.set()
            await services


def time_now() -> object:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def measure_pipeline(bootstrap: str, dsn: str, n_events: int, seed: int, partitions: int = 4) -> float:
    """Events per second from the first publish to the last applied, on fresh topics and database."""
    suffix = uuid.uuid4().hex[:8]
    db_dsn = ensure_database(dsn, f"bench_pipeline_{suffix}")
    import secrets
    import shutil
    import tempfile

    # configured services are not the embedded demo: the processor needs an anchor key (a throwaway one
    # here) and writes its checkpoints, which are part of what is measured, to a throwaway directory
    data_dir = tempfile.mkdtemp(prefix="bench-pipeline-")
    settings = Settings(kafka_bootstrap_servers=bootstrap, database_url=db_dsn, topics=topic_settings(suffix),
                        partitions=partitions, data_dir=data_dir, anchor_hmac_key=secrets.token_hex(32))
    try:
        return asyncio.run(_measure(settings, suffix, n_events, seed))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
