"""The composition root: settings -> broker, database, topics, store, processor, relay, Faust worker."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from events.publisher import Publisher
from processor.batch import BatchResult
from processor.embedded import broker_cluster_id, embedded_broker_lost, resolve_endpoints
from processor.exits import (
    BROKER_SETTING,
    DATABASE_SETTING,
    ServiceUnreachable,
    UsageError,
    classify,
    probe_broker,
    probe_database,
)
from processor.health import Health, database_check
from processor.kafka_clients import faust_credentials, kafka_python_options
from processor.relay import Relay
from processor.retry import Outage, is_broker_outage, is_database_outage, retry_sync
from processor.runtime import ProcessorLoop
from processor.settings import Settings
from processor.stops import LedgerStop
from processor.topics import ensure_topics
from projections.anchor import Anchorer
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
    health: Health | None = None
    # The exception a service of the Faust worker stopped with (the worker itself only logs it).
    failure: BaseException | None = None

    def new_health(self) -> Health:
        """A Health whose readiness checks this ledger's database."""
        self.health = Health(database_check=database_check(self.dsn, self.settings.connect_timeout_s))
        return self.health

    def store(self) -> LedgerStore:
        """A new store (its own connection); closed with the ledger."""
        store = self.store_factory(self.dsn)
        self._stores.append(store)
        return store

    def processor(self, **kwargs: Any) -> ProcessorLoop:
        if self.settings.demo_clock and "clock" not in kwargs:
            from processor.clock import BusinessClock

            kwargs["clock"] = BusinessClock()
        kwargs.setdefault("read_store", self.store())
        kwargs.setdefault("health", self.health)
        if "anchor" not in kwargs:
            kwargs["anchor"] = self.anchorer(kwargs["read_store"])
        if self.settings.embedded_broker:
            kwargs.setdefault("broker_lost", functools.partial(embedded_broker_lost, self.bootstrap))
        kwargs.setdefault("cluster_id", self.cluster_id)
        return ProcessorLoop(self.settings, self.bootstrap, self.store(), log_id=self.log_id, **kwargs)

    def anchorer(self, store: LedgerStore) -> Anchorer | None:
        """Checkpoints of the chain heads, signed and written outside the database; None for a store that
        keeps no chain. Raises processor.keys.KeyRequired without a key (outside the embedded demo)."""
        from processor.keys import anchor_key
        from projections.anchor import Anchorer, anchor_logs, archive_identity

        read_heads = getattr(store, "chain_heads", None)
        if read_heads is None:
            return None
        archive = archive_identity(self.dsn)
        return Anchorer(anchor_key(self.settings), anchor_logs(self.settings, archive, self.bootstrap), archive,
                        read_heads, interval_events_max=self.settings.anchor_interval_events_max,
                        interval_ms=self.settings.anchor_interval_ms)

    def relay(self) -> Relay:
        return Relay(self.settings, self.bootstrap, self.store(), health=self.health, log_id=self.log_id)

    def notifier(self, **kwargs: Any) -> Any:
        """The notifier (processor/notifier.py): digests to agency coordinators, on its own connection."""
        from processor.notifier import Notifier

        return Notifier(self.settings, self.bootstrap, self.dsn, **kwargs)

    def publisher(self, **producer: Any) -> Publisher:
        return publisher(self.settings, self.bootstrap, **producer)

    def close(self) -> None:
        for store in self._stores:
            store.close()
        self._stores.clear()


def publisher(settings: Settings, bootstrap: str, **producer: Any) -> Publisher:
    """A Publisher with the settings' TLS and SASL options (every producer goes through here); a broker
    that does not answer is one line naming LEDGER_KAFKA_BOOTSTRAP_SERVERS within connect_timeout_s."""
    if bootstrap:
        probe_broker(bootstrap, settings.connect_timeout_s)
    return Publisher(bootstrap, settings.topics, settings.partitions,
                     **{**kafka_python_options(settings), **producer})


def configured_dsn(settings: Settings) -> str | None:
    """LEDGER_DATABASE_URL with LEDGER_DATABASE_PASSWORD (a secret file, best) added: no password in the DSN."""
    if settings.database_url is None:
        return None
    if settings.database_password is None:
        return settings.database_url
    import psycopg

    return psycopg.conninfo.make_conninfo(settings.database_url,
                                         password=settings.database_password.get_secret_value())


def pending_migrations(dsn: str) -> list[str]:
    """Packaged migrations the database has not applied (all of them on a database without the schema)."""
    import psycopg

    from projections.postgres import migration_files

    wanted = [f.name.removesuffix(".sql") for f in migration_files()]
    with psycopg.connect(dsn) as conn:
        if conn.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,):
            return wanted
        done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations").fetchall()}
    return [v for v in wanted if v not in done]


def _schema_gap(missing: list[str]) -> str:
    from projections.postgres import migration_files

    if len(missing) == len(migration_files()):
        return "has no ledger schema"
    return f"lacks migrations {', '.join(missing)}"


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


def ledger_role_dsn(admin_dsn: str) -> str:
    """Embedded stack: migrate the database as the administrator, give the archive to its own role and
    the rest to the ledger's (projections/roles.py), and return the DSN the ledger uses: its own role,
    not a superuser. Changes nothing when all is already in place."""
    import psycopg

    from projections.roles import LEDGER_ROLE, apply_setup

    apply_setup(admin_dsn, LEDGER_ROLE)
    return psycopg.conninfo.make_conninfo(admin_dsn, user=LEDGER_ROLE)


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
    timeout = settings.connect_timeout_s
    # A service that is not there yet is waited for, bounded (outage_retry_seconds_max), saying what it
    # waits for; then OutageStop (exit 3). Each attempt is a probe that answers within connect_timeout_s,
    # not a client's 30-second retry loop. A refused login or a missing database is not waited for.
    bound = settings.outage_retry_seconds_max
    database_outage = Outage(f"PostgreSQL ({DATABASE_SETTING})" if settings.database_url else "PostgreSQL",
                             bound, log, setting="LEDGER_OUTAGE_RETRY_SECONDS_MAX")
    configured = configured_dsn(settings)
    if settings.kafka_bootstrap_servers is not None:
        broker = settings.kafka_bootstrap_servers
        retry_sync(Outage(f"the broker at {BROKER_SETTING}={broker}", bound, log,
                          setting="LEDGER_OUTAGE_RETRY_SECONDS_MAX"),
                   lambda: probe_broker(broker, timeout), broker_down)
    if configured is not None:
        retry_sync(database_outage,
                   lambda: probe_database(configured if database is None else _server_of(configured), timeout),
                   database_down)
    with resolve_endpoints(settings) as (bootstrap, server_dsn, cluster_id):
        broker_outage = Outage(f"the broker at {bootstrap}", bound, log, setting="LEDGER_OUTAGE_RETRY_SECONDS_MAX")
        server_dsn = configured or server_dsn
        name = database or (settings.database_name if settings.embedded_database else None)

        def make_database() -> str:
            dsn = ensure_database(server_dsn, name, reset=reset_database) if name else server_dsn
            return ledger_role_dsn(dsn) if settings.embedded_database else dsn

        dsn = retry_sync(database_outage, make_database, database_down)
        if reset_database and name:  # a new archive: the checkpoints of the dropped one no longer apply
            from projections.anchor import default_anchor_file

            default_anchor_file(settings, name).unlink(missing_ok=True)
        cluster = cluster_id or retry_sync(
            broker_outage,
            lambda: broker_cluster_id(bootstrap, **kafka_python_options(settings),
                                      bootstrap_timeout_ms=int(timeout * 1000)),
            broker_down)
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


def database_down(exc: BaseException) -> bool:
    """PostgreSQL is not there (yet): worth waiting for."""
    return isinstance(exc, ServiceUnreachable) or is_database_outage(exc)


def broker_down(exc: BaseException) -> bool:
    """The broker is not there (yet): worth waiting for."""
    return isinstance(exc, ServiceUnreachable) or is_broker_outage(exc)


def _server_of(dsn: str) -> str:
    """The same server's maintenance database (for checks made before a named database exists)."""
    import psycopg

    return psycopg.conninfo.make_conninfo(dsn, dbname="postgres")


@contextlib.contextmanager
def open_store(
    settings: Settings | None = None, *, database: str | None = None, migrate: bool = False,
) -> Iterator[LedgerStore]:
    """Only the database (for queries): the embedded PostgreSQL is reused if running, else started.

    Reading never changes the schema: a database that does not exist, or lacks migrations, is a
    UsageError that says to run ``benefits-ledger migrate``. ``migrate=True`` (the migrate command)
    creates the database if needed and applies the migrations.
    """
    import psycopg

    from processor.embedded import EmbeddedPostgres

    settings = settings or Settings()
    configured = configured_dsn(settings)
    with contextlib.ExitStack() as stack:
        if configured is not None:
            probe_database(configured if database is None or migrate else _server_of(configured),
                           settings.connect_timeout_s)
            server_dsn = configured
            name = database
        else:
            data = Path(settings.data_dir) / "postgres"
            if not migrate and not (data / "PG_VERSION").exists():
                raise UsageError(f"no ledger database in {data} (LEDGER_DATA_DIR): run `benefits-ledger migrate`,"
                                 " `up` or `demo` first, or set LEDGER_DATABASE_URL")
            server_dsn = stack.enter_context(EmbeddedPostgres(data)).dsn
            name = database or settings.database_name
        if migrate:
            dsn = ensure_database(server_dsn, name) if name else server_dsn
        else:
            dsn = psycopg.conninfo.make_conninfo(server_dsn, dbname=name) if name else server_dsn
            probe_database(dsn, settings.connect_timeout_s)
            missing = pending_migrations(dsn)
            if missing:
                shown = psycopg.conninfo.conninfo_to_dict(dsn).get("dbname") or "postgres"
                raise UsageError(f"database {shown!r} {_schema_gap(missing)}: run `benefits-ledger migrate`"
                                 " (reading commands never change the schema)")
        if settings.database_url is None:
            dsn = ledger_role_dsn(dsn)  # the embedded stack's ledger role, not the administrator
        store = postgres_store(dsn)
        try:
            if migrate:
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


def faust_app(ledger: Ledger, *, relay: bool = True, process: bool = True, notify: bool = False,
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
        broker_credentials=faust_credentials(ledger.settings),
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
            except Exception as exc:  # kept for the exit code; Faust itself only logs it and stops
                ledger.failure = exc
                if classify(exc) is None:
                    raise  # a bug: Faust logs its traceback and the worker crashes
                # an expected end (a lost service the retries do not cover): stop the worker as on SIGTERM;
                # `up` then ends with one line and the exit code, no traceback
                os.kill(os.getpid(), signal.SIGTERM)
            finally:
                await processor.stop()

    if notify:
        notifier = ledger.notifier()

        @app.task
        async def send_digests() -> None:
            await notifier.start()
            try:
                while True:
                    await notifier.run_once()
                    await notifier.maybe_send()
            finally:
                await notifier.stop()

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
