"""The embedded stack: a Tansu broker subprocess and an embedded PostgreSQL server, both on loopback.

Used when the settings name no broker (``kafka_bootstrap_servers``) or no database (``database_url``).
Tansu keeps everything in memory and dies with this process. PostgreSQL is a daemon that outlives a
killed process, so it is found and reused on the next start, and stopped explicitly on every exit path.
The broker is processor/embedded_broker.py, the server processor/embedded_postgres.py; this module
starts and stops them together and says when the embedded broker died under the ledger.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Self

from processor.embedded_broker import EmbeddedBroker, broker_cluster_id
from processor.embedded_postgres import (
    EmbeddedPostgres,
    hba_trusts_anyone,
    postgres_bin_dir,
    private_directory,
    stop_postgres_in,
)

if TYPE_CHECKING:
    from processor.settings import Settings

__all__ = [
    "EmbeddedBroker",
    "EmbeddedPostgres",
    "EmbeddedStack",
    "broker_cluster_id",
    "embedded_broker_lost",
    "hba_trusts_anyone",
    "postgres_bin_dir",
    "private_directory",
    "resolve_endpoints",
    "sigterm_raises_systemexit",
    "stop_postgres_in",
]

log = logging.getLogger(__name__)


@contextlib.contextmanager
def sigterm_raises_systemexit() -> Iterator[None]:
    """While active, SIGTERM raises SystemExit(143) so ``finally``/``__exit__`` blocks run.

    Further SIGTERMs while shutting down are ignored so they cannot interrupt the cleanup.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def shutting_down(signum: int, frame: FrameType | None) -> None:
        log.warning("already shutting down; ignoring signal %s", signum)

    def handler(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, shutting_down)
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class EmbeddedStack:
    """Tansu broker plus embedded PostgreSQL (data in ``data_dir``); both stopped on exit."""

    def __init__(self, data_dir: Path | str) -> None:
        self.broker = EmbeddedBroker()
        self.postgres = EmbeddedPostgres(Path(data_dir))
        self._exit_stack: contextlib.ExitStack | None = None

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    @property
    def cluster_id(self) -> str:
        return self.broker.cluster_id

    @property
    def dsn(self) -> str:
        return self.postgres.dsn

    def start(self) -> Self:
        """Start both; on failure stop whatever already started."""
        if self._exit_stack is not None:
            return self
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.broker)
            stack.enter_context(self.postgres)
            self._exit_stack = stack.pop_all()
        return self

    def stop(self) -> None:
        stack, self._exit_stack = self._exit_stack, None
        if stack is not None:
            stack.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@contextlib.contextmanager
def resolve_endpoints(settings: Settings) -> Iterator[tuple[str, str, str | None]]:
    """Yield (bootstrap, dsn, cluster_id) from settings, starting embedded services for unset ones.

    cluster_id is the embedded broker's id, or None for a configured broker. Whatever was started is
    stopped on exit, including on KeyboardInterrupt and SIGTERM.
    """
    with contextlib.ExitStack() as stack:
        if settings.kafka_bootstrap_servers is None or settings.database_url is None:
            stack.enter_context(sigterm_raises_systemexit())
        cluster_id: str | None = None
        if settings.kafka_bootstrap_servers is not None:
            bootstrap = settings.kafka_bootstrap_servers
        else:
            broker = stack.enter_context(EmbeddedBroker())
            bootstrap, cluster_id = broker.bootstrap, broker.cluster_id
            _RUNNING_BROKERS[bootstrap] = broker
            stack.callback(_RUNNING_BROKERS.pop, bootstrap, None)
        if settings.database_url is not None:
            dsn = settings.database_url
        else:
            postgres = stack.enter_context(EmbeddedPostgres(Path(settings.data_dir) / "postgres"))
            dsn = postgres.dsn
        yield bootstrap, dsn, cluster_id


# Embedded brokers started by resolve_endpoints in this process, by bootstrap address (issue 12).
_RUNNING_BROKERS: dict[str, EmbeddedBroker] = {}


def embedded_broker_lost(bootstrap: str) -> str | None:
    """Why the embedded broker at ``bootstrap`` is gone (it died under us), or None while it runs or when
    the address is not an embedded broker of this process. Its memory log died with it."""
    broker = _RUNNING_BROKERS.get(bootstrap)
    if broker is None or broker._proc is None:
        return None
    code = broker._proc.poll()
    if code is None:
        return None
    return (f"the embedded broker at {bootstrap} (pid {broker._proc.pid}) exited with code {code}; its memory log is"
            " gone with every record not yet applied. Nothing applied is lost (PostgreSQL is the record). Start"
            " `benefits-ledger up` again (a new log) and re-send what producers sent since; re-sent events that were"
            " already applied count as duplicates.")
