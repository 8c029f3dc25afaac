"""Chain heads anchored outside the database, so that a rewritten or truncated archive is detected.

The hash chain (projections/chain.py) shows a changed event only to someone who does not recompute it:
a database superuser can change an event, recompute every later link with ``archive_chain_link()`` and
move ``archive_chain_head``, or delete the newest events and rewind the head, and the chain verifies.
So the processor writes checkpoints elsewhere: "in archive A (database.schema), partition P's chain
ended, after event E at seq S, with link H", signed with HMAC-SHA256 under a key PostgreSQL never sees
(processor/keys.py), appended to logs the ledger's database cannot rewrite:

- a file, JSON lines, opened O_APPEND and fsync'd, by default ``LEDGER_DATA_DIR/anchors/<database>.jsonl``
  (mode 0600 in a 0700 directory of the ledger's OS user). The embedded PostgreSQL runs as another user
  (``embedded_postgres``) when the ledger runs as root, and a production database server runs on another
  host, so neither can write it; it is the one place that survives a restart of the memory-only broker.
- optionally a Kafka topic (``anchor_topic``): in production the one place all processor workers append
  to, kept forever (retention.ms=-1) and writable by the ledger's principal only (ACLs), out of the
  database administrator's reach.

A partition is checkpointed by the commit that brings it ``anchor_interval_events_max`` archived events
since its last checkpoint, at the latest ``anchor_interval_ms`` after its first event not yet
checkpointed, and when the processor stops. A
checkpoint covers every earlier event of its partition (the chain links them), so what is not covered is
the tail written since the last one: ``verify-archive`` counts it (``events_unanchored``).

``verify-archive`` checks every checkpoint: the archive row at (partition, seq) must still be there with
the signed link. A missing row past the partition's end is a truncated tail; a different link means an
event at or before that seq was rewritten (and the chain recomputed); a line whose signature does not
verify is a forged or damaged checkpoint. ``rebuild`` refuses to switch over an archive that fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("benefits_ledger.anchor")

FORMAT_VERSION = 1
# Rows of chain_heads(): (partition, seq, event_id, chain_hash of that row, chain_hash of the head table).
HeadRow = tuple[int, int, str, bytes, bytes]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    archive: str  # "<database>.<schema>"
    partition: int
    seq: int
    event_id: str
    chain_hash: bytes
    written_at: datetime

    def message(self) -> bytes:
        """The signed bytes: every field, in a fixed order, unambiguous (US separators, no free text)."""
        return "\x1f".join((
            f"v{FORMAT_VERSION}", self.archive, str(self.partition), str(self.seq), self.event_id,
            self.chain_hash.hex(), self.written_at.isoformat(),
        )).encode()  # fmt: skip


class BadCheckpoint(ValueError):
    """A checkpoint line that is malformed or whose signature does not verify."""


def sign(key: bytes, cp: Checkpoint) -> str:
    return hmac.new(key, cp.message(), hashlib.sha256).hexdigest()


def encode_line(key: bytes, cp: Checkpoint) -> bytes:
    doc = {"v": FORMAT_VERSION, "archive": cp.archive, "partition": cp.partition, "seq": cp.seq,
           "event_id": cp.event_id, "chain_hash": cp.chain_hash.hex(), "written_at": cp.written_at.isoformat(),
           "mac": sign(key, cp)}
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


def decode_line(key: bytes, raw: bytes) -> Checkpoint:
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("v") != FORMAT_VERSION:
            raise BadCheckpoint(f"not a version {FORMAT_VERSION} checkpoint")
        cp = Checkpoint(archive=str(doc["archive"]), partition=int(doc["partition"]), seq=int(doc["seq"]),
                        event_id=str(doc["event_id"]), chain_hash=bytes.fromhex(doc["chain_hash"]),
                        written_at=datetime.fromisoformat(doc["written_at"]))
        mac = str(doc["mac"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BadCheckpoint(f"malformed checkpoint: {exc}") from exc
    if not hmac.compare_digest(mac, sign(key, cp)):
        raise BadCheckpoint("its signature does not match: forged, damaged, or signed with another key")
    return cp


# -- logs ----------------------------------------------------------------------------------------------


class AnchorLog(Protocol):
    name: str

    def append(self, lines: Sequence[bytes]) -> None: ...

    def read(self) -> Iterator[tuple[str, bytes]]:
        """(where, line) of every checkpoint, oldest first; where names the file line or topic offset."""
        ...

    def close(self) -> None: ...


class FileAnchorLog:
    """An append-only JSON lines file of the ledger's OS user (0600 in a 0700 directory)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = str(path)

    def append(self, lines: Sequence[bytes]) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            data = b"".join(lines)
            while data:  # one write per call is the rule, a short write the exception
                data = data[os.write(fd, data):]
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self) -> Iterator[tuple[str, bytes]]:
        try:
            fh = self.path.open("rb")
        except FileNotFoundError:
            return
        with fh:
            for number, line in enumerate(fh, start=1):
                if line.strip():
                    yield f"{self.path}:{number}", line

    def close(self) -> None:
        pass


class TopicAnchorLog:
    """Checkpoints on a Kafka topic (keyed by archive), read back from the beginning for verification."""

    def __init__(self, bootstrap: str, topic: str, *, key: str) -> None:
        self.bootstrap, self.topic, self.key = bootstrap, topic, key
        self.name = f"topic {topic}"
        self._producer: Any = None

    def append(self, lines: Sequence[bytes]) -> None:
        from kafka import KafkaProducer

        if self._producer is None:
            self._ensure_topic()
            self._producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", retries=5)
        futures = [self._producer.send(self.topic, key=self.key.encode(), value=line.rstrip(b"\n")) for line in lines]
        self._producer.flush(timeout=30)
        for f in futures:
            f.get(timeout=30)  # raises the broker's error: the checkpoints stay pending

    def _ensure_topic(self) -> None:
        """Create the topic if missing (brokers with auto-creation off): one partition, kept forever."""
        from kafka import KafkaAdminClient
        from kafka.admin import NewTopic
        from kafka.errors import TopicAlreadyExistsError

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="benefits-ledger-anchor")
        try:
            if self.topic not in set(admin.list_topics()):
                with contextlib.suppress(TopicAlreadyExistsError):  # another worker was first
                    admin.create_topics([NewTopic(name=self.topic, num_partitions=1, replication_factor=1,
                                                  topic_configs={"retention.ms": "-1"})])
        finally:
            admin.close()

    def read(self) -> Iterator[tuple[str, bytes]]:
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False)
        try:
            partitions = consumer.partitions_for_topic(self.topic) or set()
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            if not tps:
                return
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            deadline = time.monotonic() + 120
            empty = 0
            while empty < 2 and time.monotonic() < deadline:  # end offsets are wrong on Tansu: read to the end
                batch = consumer.poll(timeout_ms=500)
                empty = 0 if batch else empty + 1
                for records in batch.values():
                    for r in records:
                        if r.key == self.key.encode():
                            yield f"{self.topic}[{r.partition}]@{r.offset}", r.value
                hw = [consumer.highwater(tp) for tp in tps]
                if all(h is not None and consumer.position(tp) >= h for tp, h in zip(tps, hw, strict=True)):
                    break
        finally:
            consumer.close()

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=10)
            self._producer = None


def default_anchor_file(settings: Any, database: str) -> Path:
    if settings.anchor_file:
        return Path(settings.anchor_file)
    return Path(settings.data_dir) / "anchors" / f"{database}.jsonl"


def anchor_logs(settings: Any, archive: str, bootstrap: str | None) -> list[AnchorLog]:
    """The file, and the topic when ``anchor_topic`` is set (it needs a broker)."""
    database = archive.split(".", 1)[0]
    logs: list[AnchorLog] = [FileAnchorLog(default_anchor_file(settings, database))]
    if settings.anchor_topic:
        if bootstrap is None:
            raise RuntimeError(f"anchor_topic {settings.anchor_topic} is set but no broker is known")
        logs.append(TopicAnchorLog(bootstrap, settings.anchor_topic, key=archive))
    return logs


def archive_identity(dsn: str) -> str:
    """Which archive a checkpoint is about: ``<database>.<schema>`` (rebuild keeps both)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT current_database(), current_schema()").fetchone()
    if row is None or row[1] is None:
        raise RuntimeError("no current schema: check the search_path")
    return f"{row[0]}.{row[1]}"


# -- the processor's side --------------------------------------------------------------------------------


class Anchorer:
    """Counts what each commit archived per partition and checkpoints the partitions that are due.

    ``read_heads(partitions)`` returns each partition's last archive row and chain head in one snapshot
    (PostgresStore.chain_heads); it is read right after this processor's own commit.
    """

    def __init__(
        self, key: bytes, logs: Sequence[AnchorLog], archive: str, read_heads: Callable[[list[int]], list[HeadRow]],
        *, interval_events_max: int, interval_ms: int, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.key, self.logs, self.archive, self.read_heads = key, list(logs), archive, read_heads
        self.interval_events_max, self.interval_s = interval_events_max, interval_ms / 1000
        self.clock = clock
        self.pending: dict[int, int] = {}  # partition -> events archived since its last checkpoint
        self.since: dict[int, float] = {}  # partition -> when its first such event was committed
        self.written = 0
        # checkpoint() runs in a worker thread while commits go on counting: the counts are guarded, and
        # one checkpoint runs at a time
        self._state = threading.Lock()
        self._serial: asyncio.Lock | None = None

    def committed(self, archived: Sequence[Any]) -> None:
        """Count the archive rows of a committed batch (anything with a ``partition``)."""
        now = self.clock()
        with self._state:
            for row in archived:
                self.pending[row.partition] = self.pending.get(row.partition, 0) + 1
                self.since.setdefault(row.partition, now)

    def due(self) -> list[int]:
        now = self.clock()
        with self._state:
            return sorted(p for p, n in self.pending.items()
                          if n >= self.interval_events_max or now - self.since[p] >= self.interval_s)

    def checkpoint(self, partitions: Sequence[int] | None = None) -> int:
        """Sign and append the current heads of ``partitions`` (default: every pending one). A log that
        cannot be written, or heads that cannot be read, leave them pending, to be tried again after the
        next commit."""
        import psycopg

        with self._state:
            wanted = sorted(self.pending if partitions is None else partitions)
            taken = {p: self.pending.get(p, 0) for p in wanted}
        if not wanted:
            return 0
        now = datetime.now(UTC)
        lines: list[bytes] = []
        done: list[int] = []
        try:
            heads = self.read_heads(wanted)
        except psycopg.Error as exc:
            log.error("cannot read the chain heads to checkpoint them (%s); retried after the next commit", exc)
            return 0
        for partition, seq, event_id, row_hash, head_hash in heads:
            if row_hash != head_hash:  # never sign what does not agree with itself
                log.error("partition %s: chain head %s is not the link of its last event (seq %s); not"
                          " checkpointing it: run verify-archive", partition, head_hash.hex()[:16], seq)
                continue
            lines.append(encode_line(self.key, Checkpoint(self.archive, partition, seq, event_id, row_hash, now)))
            done.append(partition)
        for target in self.logs:
            try:
                target.append(lines)
            except (OSError, RuntimeError) as exc:  # kafka errors are RuntimeErrors too (KafkaError)
                log.error("cannot append checkpoints to %s (%s); they are retried after the next commit",
                          target.name, exc)
                return 0
        with self._state:  # events committed meanwhile stay pending (the heads may or may not cover them)
            for p in done:
                left = self.pending.get(p, 0) - taken.get(p, 0)
                if left > 0:
                    self.pending[p], self.since[p] = left, self.clock()
                else:
                    self.pending.pop(p, None)
                    self.since.pop(p, None)
            self.written += len(lines)
        return len(lines)

    async def after_commit(self, archived: Sequence[Any]) -> None:
        """The processor's hook after each commit (and, with nothing archived, on idle fetches)."""
        self.committed(archived)
        if self.due():
            async with self._one_at_a_time():
                due = self.due()
                if due:
                    await asyncio.to_thread(self.checkpoint, due)

    async def flush(self) -> None:
        """At stop: every pending partition."""
        if self.pending:
            async with self._one_at_a_time():
                await asyncio.to_thread(self.checkpoint)

    def _one_at_a_time(self) -> asyncio.Lock:
        if self._serial is None:
            self._serial = asyncio.Lock()
        return self._serial

    def close(self) -> None:
        for target in self.logs:
            target.close()


# -- verification ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AnchorFinding:
    kind: str  # "truncated", "rewritten" or "checkpoint" (a forged or damaged checkpoint line)
    partition: int | None
    seq: int | None
    event_id: str | None
    reason: str


@dataclass(slots=True)
class AnchorReport:
    logs: list[str] = field(default_factory=list)
    checkpoints: int = 0  # valid checkpoints of this archive
    events_unanchored: int = 0  # archived after the last checkpoint of their partition
    findings: list[AnchorFinding] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.findings


def verify_anchors(conn: Any, key: bytes, logs: Sequence[AnchorLog], archive: str) -> AnchorReport:
    """Check every checkpoint of ``archive`` in ``logs`` against the archive on ``conn``.

    The stored links themselves are checked by verify_chain; this says whether they are the links that
    were signed when the events were committed."""
    report = AnchorReport(logs=[lg.name for lg in logs])
    checkpoints: list[Checkpoint] = []
    for target in logs:
        for where, raw in target.read():
            try:
                cp = decode_line(key, raw)
            except BadCheckpoint as exc:
                report.findings.append(AnchorFinding("checkpoint", None, None, None, f"{where}: {exc}"))
                continue
            if cp.archive == archive:
                checkpoints.append(cp)
    report.checkpoints = len(checkpoints)
    seqs = sorted({cp.seq for cp in checkpoints})
    rows = {int(s): (int(p), e, bytes(h)) for s, p, e, h in conn.execute(
        "SELECT seq, partition, event_id, chain_hash FROM archive WHERE seq = ANY(%s)", (seqs,))}
    partitions = sorted({cp.partition for cp in checkpoints}
                        | {int(r[0]) for r in conn.execute("SELECT partition FROM archive_chain_head")})
    ends: dict[int, int | None] = {}
    for p in partitions:
        row = conn.execute("SELECT max(seq) FROM archive WHERE partition = %s", (p,)).fetchone()
        ends[p] = None if row is None or row[0] is None else int(row[0])
    last_good: dict[int, int] = {}
    anchored: dict[int, int] = {}
    for cp in sorted(checkpoints, key=lambda c: (c.partition, c.seq, c.written_at)):
        p, end = cp.partition, ends.get(cp.partition)
        found = rows.get(cp.seq)
        signed = (f"a checkpoint signed {cp.written_at.isoformat(timespec='seconds')} names event {cp.event_id}"
                  f" at seq {cp.seq}")
        if found is None or found[0] != p:
            if end is None or end < cp.seq:
                ends_at = "is empty" if end is None else f"ends at seq {end}"
                reason = (f"truncated: partition {p} {ends_at} but {signed}: events were deleted from the end of"
                          " the archive (and the chain head rewound)")
                report.findings.append(AnchorFinding("truncated", p, cp.seq, cp.event_id, reason))
            else:
                reason = (f"rewritten: {signed} in partition {p}, which is gone while later events remain:"
                          " events were removed and the chain recomputed")
                report.findings.append(AnchorFinding("rewritten", p, cp.seq, cp.event_id, reason))
            continue
        if found[2] != cp.chain_hash or found[1] != cp.event_id:
            after = last_good.get(p)
            where = f"after seq {after}" if after is not None else "from the start of the partition"
            reason = (f"rewritten: the link of seq {cp.seq} in partition {p} is not the one {signed} carried: an"
                      f" event {where} up to seq {cp.seq} was changed and the chain recomputed")
            report.findings.append(AnchorFinding("rewritten", p, cp.seq, cp.event_id, reason))
            continue
        last_good[p] = cp.seq
        anchored[p] = max(anchored.get(p, 0), cp.seq)
    for p in partitions:
        if ends.get(p) is None:
            continue
        row = conn.execute("SELECT count(*) FROM archive WHERE partition = %s AND seq > %s",
                           (p, anchored.get(p, 0))).fetchone()
        report.events_unanchored += int(row[0]) if row else 0
    # the earliest damage first: a truncation or rewrite before a forged line
    report.findings.sort(key=lambda f: (f.kind == "checkpoint", f.seq if f.seq is not None else 0))
    return report
