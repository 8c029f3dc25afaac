"""What the web app needs from the composition root: stores, the users, a way to publish, the archive.

``WebContext`` is built by processor/entrypoints/web/commands.py from a ``processor.app.Ledger`` (or
from ``open_store`` and a broker address when the processor runs elsewhere), and by the tests from an
in-memory store folded by a real BatchProcessor.
"""

from __future__ import annotations

import contextlib
import queue
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from events.types import Event
from processor.entrypoints.web.auth import UserStore
from processor.settings import PlanSettings, Settings
from processor.state import AccountState, PartitionState
from projections.model import LedgerStore
from replay.archive import ArchivedEvent

Publish = Callable[[Event], None]
ArchiveReader = Callable[[datetime | None, str | None], Iterable[ArchivedEvent]]


def utcnow() -> datetime:
    return datetime.now(UTC)


class StorePool:
    """A fixed number of stores (each its own database connection), lent one request at a time."""

    def __init__(self, factory: Callable[[], LedgerStore], size: int) -> None:
        self._all = [factory() for _ in range(size)]
        self._free: queue.Queue[LedgerStore] = queue.Queue()
        for store in self._all:
            self._free.put(store)

    @contextlib.contextmanager
    def lend(self, timeout_s: float = 30.0) -> Iterator[LedgerStore]:
        store = self._free.get(timeout=timeout_s)
        try:
            yield store
        finally:
            self._free.put(store)

    def close(self) -> None:
        for store in self._all:
            store.close()


class ReplayCache:
    """The last few as-of replays of the whole archive (``entries_max``), by recorded time."""

    def __init__(self, entries_max: int) -> None:
        self.entries_max = entries_max
        self._lock = threading.Lock()
        self._entries: OrderedDict[datetime, Any] = OrderedDict()

    def get(self, known_at: datetime, build: Callable[[], Any]) -> Any:
        with self._lock:
            if known_at in self._entries:
                self._entries.move_to_end(known_at)
                return self._entries[known_at]
        value = build()
        if self.entries_max:
            with self._lock:
                self._entries[known_at] = value
                while len(self._entries) > self.entries_max:
                    self._entries.popitem(last=False)
        return value


@dataclass
class WebContext:
    settings: Settings
    stores: StorePool
    users: UserStore
    publish: Publish
    read_archive: ArchiveReader
    secret: str
    clock: Callable[[], datetime] = utcnow
    replays: ReplayCache = field(default_factory=lambda: ReplayCache(4))
    dsn: str | None = None  # the database, for the readiness check of /readyz (PostgreSQL contexts)

    @property
    def plan(self) -> PlanSettings:
        return self.settings.plan

    def state(self, account_id: str) -> tuple[AccountState | None, PartitionState | None]:
        """The account's fold state as last committed, and its partition's reference data."""
        with self.stores.lend() as store:
            account = store.load_accounts([account_id]).get(account_id)
            if account is None:
                return None, None
            part = store.load_partitions([account.partition]).get(account.partition)
        return account, part or PartitionState(partition=account.partition)

    def close(self) -> None:
        self.stores.close()
        self.users.close()


def session_secret(settings: Settings) -> str:
    """The configured secret, or one kept in data_dir/web-secret (created on first use, mode 0600)."""
    if settings.web.session_secret is not None:
        return settings.web.session_secret.get_secret_value()
    path = Path(settings.data_dir) / "web-secret"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    path.touch(mode=0o600)
    path.write_text(value)
    return value


def postgres_archive_reader(dsn: str) -> ArchiveReader:
    """Archive rows in applied order for replay: each partition's prefix up to R, optionally one account."""
    from replay.archive import connect, read_archive

    def read(known_at: datetime | None, account_id: str | None) -> Iterable[ArchivedEvent]:
        with connect(dsn) as conn:
            try:
                return list(read_archive(conn, known_at=known_at, account_id=account_id))
            finally:
                conn.rollback()

    return read


def memory_archive_reader(store: Any) -> ArchiveReader:
    """The same over a MemoryStore's archive list (unit tests)."""

    def read(known_at: datetime | None, account_id: str | None) -> Iterable[ArchivedEvent]:
        rows = [ArchivedEvent(seq, r.partition, r.event_id, r.event_type, r.account_id, r.recorded_at, r.body,
                              r.body_hash) for seq, r in enumerate(store.archive, start=1)]
        if account_id is not None:
            mine = [r for r in rows if r.account_id == account_id]
            if not mine:
                return []
            part = mine[0].partition
            rows = [r for r in rows if r.account_id == account_id or (r.account_id == "*" and r.partition == part)]
        if known_at is None:
            return rows
        bounds: dict[int, tuple[datetime, int]] = {}
        for r in rows:
            if r.recorded_at <= known_at:
                best = bounds.get(r.partition)
                if best is None or (r.recorded_at, r.seq) > best:
                    bounds[r.partition] = (r.recorded_at, r.seq)
        return [r for r in rows if r.partition in bounds and r.seq <= bounds[r.partition][1]]

    return read
