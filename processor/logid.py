"""Is the broker's log still the one the ledger's positions belong to?

Positions and archive rows are keyed by a log id: the broker's cluster id (or a later epoch of it,
``<cluster id>~N``, after ``benefits-ledger accept-log``). A log that got shorter is caught by the
high-water and OffsetOutOfRange checks (LogTruncated). A log *replaced* under the same identity is not:
Tansu restarted with the same cluster id, or on Kafka a topic deleted and recreated, starts again at
offset 0, and a ledger that seeks to its stored positions silently skips every new record below them.

Kafka (2.8 and later) and Tansu give every topic a topic id, new each time the topic is created.
The ledger records each input topic's id the first time it reads the topic under a log, and compares
it at start and every ``log_check_interval_ms``: a different id (or another cluster id at the same
address) stops the processor with ``LogReplaced`` before anything more is read.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterable
from typing import Any

from processor.stops import DataIntegrityStop
from projections.model import LedgerStore

log = logging.getLogger("benefits_ledger.logid")

# What brokers without topic ids answer (all-zero UUID in its two spellings).
_NO_TOPIC_ID = frozenset({"", "None", "00000000-0000-0000-0000-000000000000", "AAAAAAAAAAAAAAAAAAAAAA"})

WHAT_TO_DO = (
    "Nothing was skipped or applied from it. If that broker's records are gone for good, run"
    " `benefits-ledger accept-log` to continue on it as a new log from offset 0 (re-sent events count as"
    " duplicates, so re-send everything producers sent since the last applied position); otherwise point"
    " the ledger at the broker that holds its log (LEDGER_KAFKA_BOOTSTRAP_SERVERS)."
)


class LogReplaced(DataIntegrityStop):
    """The broker's log has the ledger's log identity but is another log (recreated topics)."""


class BrokerLost(DataIntegrityStop):
    """The embedded broker (memory storage) died under the ledger: its log is gone."""


def describe_log(admin: Any, topics: Iterable[str]) -> tuple[str, dict[str, str]]:
    """(cluster id, {topic: topic id}) from a kafka-python KafkaAdminClient; topics without an id are left out."""
    cluster_id = str(admin.describe_cluster()["cluster_id"])
    ids: dict[str, str] = {}
    for meta in admin.describe_topics(list(topics)):
        name = meta.get("name") or meta.get("topic")
        topic_id = str(meta.get("topic_id"))
        if meta.get("error_code", 0) == 0 and name and topic_id not in _NO_TOPIC_ID:
            ids[str(name)] = topic_id
    return cluster_id, ids


def check_log(
    store: LedgerStore, log_id: str, bootstrap: str, cluster_now: str, topic_ids: dict[str, str],
    *, cluster_id: str | None = None,
) -> None:
    """Raise LogReplaced if the broker is not the log ``log_id`` (of cluster ``cluster_id``, when given);
    record topic ids seen for the first time."""
    if cluster_id is not None and cluster_now != cluster_id:
        raise LogReplaced(
            f"the broker at {bootstrap} is now cluster {cluster_now}, but this ledger's positions (the offsets it"
            f" applied) on log {log_id} belong to cluster {cluster_id}: another broker answers at that address,"
            " or the broker restarted and lost its log. Nothing was skipped or applied from it. Restart `up` to"
            f" read that cluster as a log of its own (from offset 0), or point the ledger at cluster {cluster_id}."
        )
    known = store.log_topics(log_id)
    replaced = {t: (known[t], i) for t, i in sorted(topic_ids.items()) if t in known and known[t] != i}
    if replaced:
        first, (old, new) = next(iter(replaced.items()))
        detail = f"{first}: topic id was {old}, is now {new}" + (
            f"; and {len(replaced) - 1} more" if len(replaced) > 1 else "")
        raise LogReplaced(
            f"{', '.join(replaced)} on the broker at {bootstrap} {'is' if len(replaced) == 1 else 'are'} not the"
            f" topic{'s' if len(replaced) > 1 else ''} this ledger read under log {log_id} ({detail}): deleted and"
            f" recreated, or the broker restarted with the same cluster id and lost its records. {WHAT_TO_DO}"
        )
    fresh = {t: i for t, i in topic_ids.items() if t not in known}
    if fresh:
        store.record_log_topics(log_id, fresh)
        log.info("log %s: recorded topic ids of %s", log_id, ", ".join(sorted(fresh)))


def _reachable(bootstrap: str, timeout_s: float) -> None:
    """Raise ConnectionError unless one of the bootstrap addresses accepts a TCP connection."""
    errors = []
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            socket.create_connection((host.strip("[]") or "localhost", int(port)), timeout=timeout_s).close()
            return
        except (OSError, ValueError) as exc:
            errors.append(f"{address.strip()}: {exc}")
    raise ConnectionError(f"no broker answers at {bootstrap} ({'; '.join(errors)})")


class LogGuard:
    """Runs check_log against the broker through one kafka-python admin client (call it in a thread)."""

    def __init__(self, bootstrap: str, store: LedgerStore, log_id: str, topics: Iterable[str],
                 *, cluster_id: str | None = None, request_timeout_ms: int = 10_000,
                 client_options: dict[str, Any] | None = None) -> None:
        self.bootstrap = bootstrap
        self.client_options = client_options or {}  # TLS and SASL (processor/kafka_clients.py)
        self.cluster_id = cluster_id  # None: only the topic ids are checked
        self.store = store
        self.log_id = log_id
        self.topics = tuple(topics)
        self.request_timeout_ms = request_timeout_ms
        self._admin: Any = None
        self._lock = threading.Lock()  # the guard's loop and the processor may both ask (one client)

    def check(self) -> None:
        """Raise LogReplaced, or a broker error (kafka.errors.KafkaError, OSError) when it cannot ask."""
        with self._lock:
            self._check()

    def _check(self) -> None:
        from kafka import KafkaAdminClient

        if self._admin is None:
            # A client whose bootstrap fails leaves its network thread behind: try the address first.
            _reachable(self.bootstrap, self.request_timeout_ms / 1000)
            self._admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="benefits-ledger-logid",
                                           request_timeout_ms=self.request_timeout_ms,
                                           bootstrap_timeout_ms=self.request_timeout_ms,
                                           **self.client_options)
        # on a broker error the client is kept: it reconnects by itself once the broker is back
        cluster_now, ids = describe_log(self._admin, self.topics)
        check_log(self.store, self.log_id, self.bootstrap, cluster_now, ids, cluster_id=self.cluster_id)

    def close_later(self) -> None:
        """Close without waiting: a client of a broker that is gone can take long to close, and the
        check may still run in its thread."""
        admin, self._admin = self._admin, None
        if admin is not None:
            threading.Thread(target=self._close, args=(admin,), name="logid-close", daemon=True).start()

    def close(self) -> None:
        admin, self._admin = self._admin, None
        self._close(admin)

    @staticmethod
    def _close(admin: Any) -> None:
        if admin is not None:
            try:
                admin.close()
            except (OSError, RuntimeError) as exc:  # closing a client of a dead broker
                log.debug("closing the log check's admin client: %s", exc)
