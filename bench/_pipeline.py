"""The project's pipeline, publish to applied: processor + relay on the embedded broker and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import date

from events.types import BROADCAST_ACCOUNT, DayClosed, Event
from processor.app import ensure_database, open_ledger, run_services
from processor.demo import generate
from processor.settings import Settings, TopicSettings

EVENTS_PER_MEMBER_YEAR = 36  # roughly, for the demo program's mix


def program_events(n: int, seed: int) -> list[Event]:
    """The first n events of a realistic program, in business order."""
    program = generate(members=max(20, n // EVENTS_PER_MEMBER_YEAR + 20), months=12, seed=seed)
    events = [e for _, phase in program.phases for e in phase]
    return events[:n]


async def _measure(settings: Settings, events: list[Event]) -> float:
    with open_ledger(settings) as ledger:
        stop = asyncio.Event()
        services = asyncio.create_task(run_services(ledger, stop))
        watcher = ledger.store()
        publisher = ledger.publisher()

        async def until(target: int, timeout_s: float) -> None:
            deadline = time.monotonic() + timeout_s
            while (await asyncio.to_thread(watcher.counts)).received < target:
                if services.done():
                    services.result()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"pipeline stalled below {target} records")
                await asyncio.sleep(0.01)

        try:
            # Warm up: the worker joins its group before the clock starts (the baselines do the same).
            warm = DayClosed(event_id=f"warmup-{uuid.uuid4().hex}", account_id=BROADCAST_ACCOUNT,
                             effective_on=date(2025, 12, 31), occurred_at=events[0].occurred_at,
                             business_date=date(2025, 12, 31), source="bench")
            await asyncio.to_thread(_send, publisher, [warm])
            await until(publisher.records_sent, 60)
            start = time.perf_counter()
            await asyncio.to_thread(_send, publisher, events)
            await until(publisher.records_sent, 600)
            elapsed = time.perf_counter() - start
            return (publisher.records_sent - settings.partitions) / elapsed
        finally:
            stop.set()
            await services
            publisher.close()


def _send(publisher: object, events: list[Event]) -> None:
    publisher.publish(events)  # type: ignore[attr-defined]
    publisher.flush()  # type: ignore[attr-defined]


def measure_pipeline(bootstrap: str, dsn: str, n_events: int, seed: int, partitions: int = 4) -> float:
    """Events per second from the first publish to the last applied, on fresh topics and database."""
    run = uuid.uuid4().hex[:8]
    db_dsn = ensure_database(dsn, f"bench_pipeline_{run}")
    names = TopicSettings()
    topics = TopicSettings(**{f: f"{getattr(names, f)}.{run}" for f in TopicSettings.model_fields})
    settings = Settings(kafka_bootstrap_servers=bootstrap, database_url=db_dsn, topics=topics,
                        partitions=partitions)
    events = program_events(n_events, seed)
    return asyncio.run(_measure(settings, events))
