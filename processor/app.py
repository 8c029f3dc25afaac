"""The composition root: settings -> broker, database, topics, store, processor, relay, Faust worker."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from events.publisher import Publisher
from processor.batch import BatchResult
from processor.embedded import broker_cluster_id, embedded_broker_lost, resolve_endpoints
from processor.retry import Outage, is_broker_outage, is_database_outage, retry_sync
from processor.runtime import ProcessorLoop, Relay
from processor.settings import Settings
from processor.stops import LedgerStop
from processor.topics import ensure_topics
from projections.model import LedgerStore

log = logging.getLogger("benefits_ledger")

StoreFactory = Callable[[str], LedgerStore]


def postgres_store(dsn: str) -> LedgerStore:
    from projections.postgres import PostgresStore

    return PostgresStore(dsn)


@dataclass
class Ledger:
    """Everything wired for one deployment; the embedded stack lives as long as the context."""

    settings: Settings
    bootstrap: str
    dsn: str
    log_id: str
    store_factory: StoreFactory = postgres_store
    _stores: list[LedgerStore] = field(default_factory=list)
    cluster_id: str | None = None  # the broker's cluster id; log_id is it or a later epoch of it (logid.py)

    def store(self) -> LedgerStore:
        """A new store (its own connection); closed with the ledger."""
        store = self.store_factory(self.dsn)
        self._stores.append(store)
        return store

    def processor(self, **kwargs: Any) -> ProcessorLoop:
        kwargs.setdefault("read_store", self.store())
        if self.settings.embedded_broker:
            kwargs.setdefault("broker_lost", functools.partial(embedded_broker_lost, self.bootstrap))
        kwargs.setdefault("cluster_id", self.cluster_id)
        return ProcessorLoop(self.settings, self.bootstrap, self.store(), log_id=self.log_id, **kwargs)

    def relay(self) -> Relay:
        return Relay(self.settings, self.bootstrap, self.store(), log_id=self.log_id)

    def publisher(self, **producer: Any) -> Publisher:
        return Publisher(self.bootstrap, self.settings.topics, self.settings.partitions, **producer)

    def close(self) -> None:
        for store in self._stores:
            store.close()
        self._stores.clear()


def ensure_database(server_dsn: str, name: str, *, reset: bool = False) -> str:
    """Create database ``name`` on the server if missing (drop it first with reset); return its DSN."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(server_dsn, autocommit=True) as conn:
        if reset:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return psycopg.conninfo.make_conninfo(server_dsn, dbname=name)


def _runtime_file(settings: Settings) -> Path:
    return Path(settings.data_dir) / "run" / "broker.json"


def running_embedded_broker(settings: Settings) -> str | None:
    """The bootstrap address of an embedded broker that ``benefits-ledger up`` is running, if any."""
    path = _runtime_file(settings)
    if not path.exists():
        return None
    info = json.loads(path.read_text())
    try:
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return None
    return str(info["bootstrap"])


@contextlib.contextmanager
def advertise_embedded_broker(settings: Settings, bootstrap: str) -> Iterator[None]:
    """Let other commands (publish) find the embedded broker while ``up`` runs."""
    path = _runtime_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"bootstrap": bootstrap, "pid": os.getpid()}))
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def open_ledger(
    settings: Settings | None = None,
    *,
    store_factory: StoreFactory = postgres_store,
    database: str | None = None,
    reset_database: bool = False,
) -> Iterator[Ledger]:
    """Start (or connect to) broker and database, migrate, create topics, and identify the log.

    ``database`` names a database on the same server instead of the configured one (the demo uses its
    own, recreated with ``reset_database``).
    """
    settings = settings or Settings()
    with resolve_endpoints(settings) as (bootstrap, server_dsn, cluster_id):
        # Services that are not there yet are waited for, bounded (outage_retry_seconds_max), then OutageStop.
        bound = settings.outage_retry_seconds_max
        database_outage = Outage("PostgreSQL", bound, log)
        broker_outage = Outage(f"the broker at {bootstrap}", bound, log)
        name = database or (settings.database_name if settings.embedded_database else None)
        dsn = retry_sync(database_outage,
                         lambda: ensure_database(server_dsn, name, reset=reset_database) if name else server_dsn,
                         is_database_outage)
        cluster = cluster_id or retry_sync(broker_outage, lambda: broker_cluster_id(bootstrap), is_broker_outage)
        ledger = Ledger(settings, bootstrap, dsn, cluster, store_factory, cluster_id=cluster)
        try:
            store = retry_sync(database_outage, ledger.store, is_database_outage)
            retry_sync(database_outage, store.migrate, is_database_outage)
            # After `accept-log` the ledger reads the cluster as a later log of it (processor/logid.py).
            ledger.log_id = retry_sync(database_outage, lambda: store.current_log(cluster), is_database_outage)
            retry_sync(broker_outage, lambda: ensure_topics(bootstrap, settings), is_broker_outage)
            if settings.embedded_broker:
                with advertise_embedded_broker(settings, bootstrap):
                    yield ledger
            else:
                yield ledger
        finally:
            ledger.close()


@contextlib.contextmanager
def open_store(settings: Settings | None = None, *, database: str | None = None) -> Iterator[LedgerStore]:
    """Only the database (for queries): the embedded PostgreSQL is reused if running, else started."""
    from processor.embedded import EmbeddedPostgres

    settings = settings or Settings()
    with contextlib.ExitStack() as stack:
        if settings.database_url is not None:
            server_dsn = settings.database_url
            name = database
        else:
            server_dsn = stack.enter_context(EmbeddedPostgres(Path(settings.data_dir) / "postgres")).dsn
            name = database or settings.database_name
        dsn = ensure_database(server_dsn, name) if name else server_dsn
        store = postgres_store(dsn)
        try:
            store.migrate()
            yield store
        finally:
            store.close()


async def run_services(
    ledger: Ledger, stop: asyncio.Event, *, relay: bool = True, process: bool = True,
    on_batch: Callable[[BatchResult], None] | None = None,
) -> None:
    """Processor and relay in this event loop until ``stop`` is set; a failing batch propagates."""
    loop = ledger.processor(on_batch=on_batch) if process else None
    rel = ledger.relay() if relay else None
    if loop is not None:
        await loop.start()
    if rel is not None:
        await rel.start()
    try:
        while not stop.is_set():
            if loop is not None:
                await loop.run_once()
            else:
                await asyncio.sleep(ledger.settings.relay_interval_ms / 1000)
            if rel is not None:
                await rel.publish_pending()
    except asyncio.CancelledError:
        if loop is None or loop.fatal is None:
            raise
        raise loop.fatal from None  # the processor's guard interrupted the relay's turn: stop for its reason
    finally:
        if loop is not None:
            await loop.stop()
        if rel is not None:
            await rel.publish_pending()
            await rel.stop()


def faust_app(ledger: Ledger, *, relay: bool = True, process: bool = True,
              on_stop: Callable[[LedgerStop], None] | None = None) -> Any:
    """The Faust application that hosts the batch loop (a task) and the relay (a timer).

    Faust's own per-event agents are bypassed on the hot path: the task consumes with aiokafka getmany
    in batches. The app runs in producer-only mode so Faust starts no consumer group of its own.
    A LedgerStop (a data integrity stop, an outage past its bound) goes to ``on_stop``, which ends the
    worker; without one it crashes the worker like any error.
    """

    def stopping(exc: LedgerStop, *, logged: bool = False) -> None:
        if on_stop is None:
            raise exc
        if not logged:
            log.error("stopping: %s", exc.one_line())
        on_stop(exc)

    import faust

    app = faust.App(
        f"{ledger.settings.consumer_group}-runtime",
        broker=f"kafka://{ledger.bootstrap}",
        web_enabled=False,
        store="memory://",
        broker_session_timeout=ledger.settings.session_timeout_ms / 1000,
        topic_partitions=ledger.settings.partitions,
    )
    app.producer_only = True

    if process:
        processor = ledger.processor()

        @app.task
        async def process_batches() -> None:
            try:
                await processor.start()
                while True:
                    await processor.run_once()
            except LedgerStop as exc:
                log.error("stopping: %s", exc.one_line())
                # before the worker's shutdown, which cancels what takes long; bounded all the same
                try:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(processor.stop(), 30)
                finally:  # whatever the clients do while they stop, the worker stops
                    stopping(exc, logged=True)
            finally:
                await processor.stop()

    if relay:
        rel = ledger.relay()

        @app.task
        async def start_relay() -> None:
            try:
                await rel.start()
            except LedgerStop as exc:
                stopping(exc)

        @app.on_before_shutdown.connect
        async def stop_relay(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
            await rel.stop()

        @app.timer(interval=ledger.settings.relay_interval_ms / 1000)
        async def publish_outbox() -> None:
            if rel.producer is not None:
                try:
                    await rel.publish_pending()
                except LedgerStop as exc:
                    stopping(exc)

    return app
