"""The notifier: a subscriber of the discrepancy topic, in its own consumer group, that sends each agency
coordinator a daily digest of the agency's open actions by SMTP.

It folds the topic into its own tables (migration 0060): each discrepancy as last told (opened,
amounts changed, resolved, superseded) and its positions, in one transaction per batch, so a restart
resumes exactly where it was, as the processor does; a re-published event (the relay after a crash)
changes nothing. Once a day, from ``digest_hour`` in the plan's time zone and only when it has caught
up with the topic (a fetch returned nothing), it sends each coordinator with open actions one digest.

What it sent is recorded in a table, not as an event: the key (agency, day) is checked and written
on the notifier's own connection, so one digest a day holds across restarts without a round trip
through the broker and the processor that an event would need before the notifier could see it. A
crash after the SMTP server accepted a digest and before its row is written sends it again on
restart (at least once, never silently lost). The formal notice documents, which auditors replay,
are ``notice_issued`` events (replay/notices.py).
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email.message import EmailMessage
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from events import codec
from events.money import format_cents
from events.types import DiscrepancyAmountChanged, DiscrepancyOpened, DiscrepancyResolved, DiscrepancySuperseded
from processor.settings import Settings

log = logging.getLogger("benefits_ledger.notifier")

# The agency's people: its benefits coordinator and its payroll office (replay/notices.py says the same).
COORDINATOR_ACTORS = ("agency_coordinator", "payroll")


@dataclass(frozen=True, slots=True)
class Action:
    discrepancy_id: str
    account_id: str
    kind: str
    coverage_month: date | None
    expected_cents: int
    actual_cents: int
    explanation: str
    action: str
    actor: str

    @property
    def amount_cents(self) -> int:
        return abs(self.actual_cents - self.expected_cents)


@dataclass(frozen=True, slots=True)
class SentDigest:
    agency_id: str
    digest_on: date
    recipient: str
    message_id: str
    discrepancy_ids: tuple[str, ...]


class NotifierStore:
    """The notifier's tables, on a connection of its own."""

    def __init__(self, dsn: str, group: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=False)
        self.group = group

    def close(self) -> None:
        self.conn.close()

    def positions(self, topic: str) -> dict[int, int]:
        rows = self.conn.execute("SELECT partition, next_offset FROM notifier_position WHERE consumer_group = %s"
                                 " AND topic = %s", (self.group, topic)).fetchall()
        self.conn.rollback()
        return {int(p): int(o) for p, o in rows}

    def apply(self, topic: str, records: list[tuple[int, int, Any]]) -> int:
        """Fold (partition, offset, event or None) into the tables and move the positions, atomically.
        Returns how many events changed a row."""
        changed = 0
        ends: dict[int, int] = {}
        with self.conn.transaction(), self.conn.cursor() as cur:
            for partition, offset, event in records:
                ends[partition] = max(ends.get(partition, 0), offset + 1)
                if event is None:
                    continue
                changed += _fold(cur, event)
            for partition, next_offset in ends.items():
                cur.execute(
                    "INSERT INTO notifier_position (consumer_group, topic, partition, next_offset) VALUES"
                    " (%s, %s, %s, %s) ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET"
                    " next_offset = greatest(notifier_position.next_offset, excluded.next_offset), updated_at = now()",
                    (self.group, topic, partition, next_offset))
        return changed

    def open_actions(self, agency_id: str | None = None) -> dict[str, list[Action]]:
        """Open actions of the agencies' own people, by agency."""
        rows = self.conn.execute(
            "SELECT payer_id, discrepancy_id, account_id, kind, coverage_month, expected_cents, actual_cents,"
            " explanation, action, actor FROM notifier_action WHERE status = 'open' AND payer_id IS NOT NULL"
            " AND actor = ANY(%s) AND (%s::text IS NULL OR payer_id = %s)"
            " ORDER BY payer_id, kind, account_id, coverage_month, discrepancy_id",
            (list(COORDINATOR_ACTORS), agency_id, agency_id)).fetchall()
        self.conn.rollback()
        out: dict[str, list[Action]] = {}
        for payer, *rest in rows:
            out.setdefault(payer, []).append(Action(*rest))
        return out

    def sent_on(self, day: date) -> set[str]:
        rows = self.conn.execute("SELECT agency_id FROM notifier_digest WHERE digest_on = %s", (day,)).fetchall()
        self.conn.rollback()
        return {r[0] for r in rows}

    def record(self, digest: SentDigest, total_due_cents: int, sent_at: datetime) -> None:
        with self.conn.transaction():
            self.conn.execute(
                "INSERT INTO notifier_digest (agency_id, digest_on, recipient, message_id, discrepancy_ids,"
                " total_due_cents, sent_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (digest.agency_id, digest.digest_on, digest.recipient, digest.message_id,
                 list(digest.discrepancy_ids), total_due_cents, sent_at))

    def digests(self) -> list[SentDigest]:
        rows = self.conn.execute("SELECT agency_id, digest_on, recipient, message_id, discrepancy_ids FROM"
                                 " notifier_digest ORDER BY digest_on, agency_id").fetchall()
        self.conn.rollback()
        return [SentDigest(a, d, r, m, tuple(ids)) for a, d, r, m, ids in rows]


def _fold(cur: psycopg.Cursor[Any], event: Any) -> int:
    """One discrepancy event into notifier_action; a repeat (same event again) changes nothing."""
    if isinstance(event, DiscrepancyOpened):
        cur.execute(
            "INSERT INTO notifier_action (discrepancy_id, account_id, payer_id, kind, coverage_month, expected_cents,"
            " actual_cents, explanation, action, actor, status, last_event_id) VALUES"
            " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'open', %s) ON CONFLICT (discrepancy_id) DO NOTHING",
            (event.discrepancy_id, event.account_id, event.payer_id, event.kind, event.coverage_month,
             event.expected_cents, event.actual_cents, event.explanation, event.action, event.actor, event.event_id))
    elif isinstance(event, DiscrepancyAmountChanged):
        cur.execute(
            "UPDATE notifier_action SET expected_cents = %s, actual_cents = %s, explanation = %s,"
            " action = coalesce(%s, action), last_event_id = %s, updated_at = now()"
            " WHERE discrepancy_id = %s AND status = 'open' AND last_event_id <> %s",
            (event.expected_cents, event.actual_cents, event.explanation, event.action, event.event_id,
             event.discrepancy_id, event.event_id))
    elif isinstance(event, DiscrepancyResolved | DiscrepancySuperseded):
        status = "resolved" if isinstance(event, DiscrepancyResolved) else "superseded"
        cur.execute("UPDATE notifier_action SET status = %s, last_event_id = %s, updated_at = now()"
                    " WHERE discrepancy_id = %s AND status = 'open'", (status, event.event_id, event.discrepancy_id))
    else:
        return 0  # another type on the topic (a later version may add some): nothing for a digest
    return cur.rowcount


def compose(agency_id: str, day: date, actions: list[Action], *, sender: str, recipient: str) -> EmailMessage:
    """The digest: a plain-text body and the same as HTML (a Jinja2 template), one line per action."""
    from replay.documents import render

    msg = EmailMessage()
    msg["Subject"] = f"benefits-ledger: {len(actions)} open action{'s' if len(actions) != 1 else ''} for {agency_id}," \
                     f" {day:%Y-%m-%d}"
    msg["From"] = sender
    msg["To"] = recipient
    msg["Message-ID"] = f"<digest-{agency_id}-{day:%Y%m%d}@benefits-ledger>"
    msg["X-Ledger-Agency"] = agency_id
    msg["X-Ledger-Discrepancies"] = ", ".join(a.discrepancy_id for a in actions)
    lines = [f"Open actions for agency {agency_id} as of {day:%B %d, %Y}:", ""]
    for a in actions:
        month = f"{a.coverage_month:%Y-%m}" if a.coverage_month else "-"
        lines.append(f"- [{a.discrepancy_id}] {a.kind} {a.account_id} {month}: {format_cents(a.amount_cents)}."
                     f" {a.action}. ({a.explanation})")
    lines += ["", "Each item closes when the payment or correction reaches the ledger."]
    msg.set_content("\n".join(lines))
    msg.add_alternative(render("digest.html", agency_id=agency_id, day=day, actions=actions), subtype="html")
    return msg


class _Seek(ConsumerRebalanceListener):
    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.notifier.caught_up = False

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.notifier.seek_to_stored(list(assigned))


def utcnow() -> datetime:
    return datetime.now(UTC)


class Notifier:
    def __init__(self, settings: Settings, bootstrap: str, dsn: str, *, clock: Callable[[], datetime] = utcnow
                 ) -> None:
        self.settings = settings
        self.config = settings.notifier
        self.bootstrap = bootstrap
        self.topic = settings.topics.discrepancies
        self.store = NotifierStore(dsn, self.config.consumer_group)
        self.clock = clock
        self.consumer: AIOKafkaConsumer | None = None
        self.caught_up = False
        self.skipped = 0  # records that are not discrepancy events this notifier can read

    async def start(self) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=self.config.consumer_group, enable_auto_commit=False,
            auto_offset_reset="earliest", session_timeout_ms=self.settings.session_timeout_ms,
            heartbeat_interval_ms=self.settings.heartbeat_interval_ms, max_poll_records=self.config.batch_records_max,
        )
        self.consumer.subscribe([self.topic], listener=_Seek(self))
        await self.consumer.start()

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None
        self.store.close()

    def seek_to_stored(self, assigned: list[TopicPartition]) -> None:
        assert self.consumer is not None
        stored = self.store.positions(self.topic)
        for tp in assigned:
            self.consumer.seek(tp, stored.get(tp.partition, 0))
        self.caught_up = False

    async def run_once(self) -> int:
        """Fetch and fold one batch; an empty fetch means caught up (Tansu's end offsets are not to be trusted)."""
        assert self.consumer is not None
        fetched = await self.consumer.getmany(timeout_ms=200, max_records=self.config.batch_records_max)
        records: list[tuple[int, int, Any]] = []
        for tp, messages in fetched.items():
            for m in messages:
                try:
                    event = codec.decode_output(m.value or b"")
                except codec.EventDecodeError as exc:
                    # the relay writes this topic; a record it could not have written is skipped, loudly
                    log.warning("%s[%d]@%d is not a discrepancy event: %s", tp.topic, tp.partition, m.offset, exc)
                    self.skipped += 1
                    event = None
                records.append((tp.partition, m.offset, event))
        if not records:
            self.caught_up = bool(self.consumer.assignment())
            return 0
        self.caught_up = False
        await asyncio.to_thread(self.store.apply, self.topic, records)
        ends: dict[TopicPartition, int] = {}
        for partition, offset, _ in records:
            tp = TopicPartition(self.topic, partition)
            ends[tp] = max(ends.get(tp, 0), offset + 1)
        await self.consumer.commit(ends)  # monitoring only: PostgreSQL holds the positions
        return len(records)

    def today(self) -> tuple[date, int]:
        now = self.clock().astimezone(ZoneInfo(self.settings.plan.timezone))
        return now.date(), now.hour

    async def maybe_send(self) -> list[SentDigest]:
        """Today's digests, once caught up and from the digest hour on."""
        day, hour = self.today()
        if not self.caught_up or hour < self.config.digest_hour:
            return []
        return await self.send_digests(day)

    async def send_digests(self, day: date) -> list[SentDigest]:
        """One digest per agency with open actions and a coordinator address, not yet sent that day."""
        done = await asyncio.to_thread(self.store.sent_on, day)
        actions = await asyncio.to_thread(self.store.open_actions)
        sent = []
        for agency, items in sorted(actions.items()):
            if agency in done:
                continue
            recipient = self.config.coordinators.get(agency)
            if recipient is None:
                log.warning("agency %s has %d open actions and no coordinator address"
                            " (LEDGER_NOTIFIER__COORDINATORS): no digest", agency, len(items))
                continue
            msg = compose(agency, day, items, sender=self.config.sender, recipient=recipient)
            await asyncio.to_thread(self._send, msg)
            digest = SentDigest(agency, day, recipient, str(msg["Message-ID"]), tuple(a.discrepancy_id for a in items))
            await asyncio.to_thread(self.store.record, digest, sum(a.amount_cents for a in items), self.clock())
            log.info("digest for %s sent to %s: %d actions", agency, recipient, len(items))
            sent.append(digest)
        return sent

    def _send(self, msg: EmailMessage) -> None:
        c = self.config
        assert c.smtp_host is not None, "the notifier needs LEDGER_NOTIFIER__SMTP_HOST"
        with smtplib.SMTP(c.smtp_host, c.smtp_port, timeout=c.smtp_timeout_s) as smtp:
            if c.smtp_starttls:
                smtp.starttls()
            if c.smtp_username:
                smtp.login(c.smtp_username, c.smtp_password.get_secret_value() if c.smtp_password else "")
            smtp.send_message(msg)

    async def run(self, stop: asyncio.Event) -> None:
        await self.start()
        try:
            while not stop.is_set():
                await self.run_once()
                await self.maybe_send()
        finally:
            await self.stop()
