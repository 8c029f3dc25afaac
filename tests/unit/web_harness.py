"""The web app over an in-memory ledger: publishing folds the event at once through the real
BatchProcessor (or holds it, to see it pending), so pages show what the processor would commit."""

from __future__ import annotations

import functools
import re
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient

from events.codec import encode
from events.topics import topic_for
from events.types import Event
from processor.batch import BatchProcessor, Record, partition_for
from processor.entrypoints.web.app import create_app
from processor.entrypoints.web.auth import MemoryUserStore, User, hash_password
from processor.entrypoints.web.context import ReplayCache, StorePool, WebContext, memory_archive_reader
from processor.settings import Settings
from projections.memory import MemoryStore

PASSWORD = "correct horse battery"
PEOPLE = (("sam", "specialist", None), ("kim", "specialist", None), ("sue", "supervisor", None),
          ("ava", "auditor", None), ("cora", "agency_coordinator", "AG-001"), ("otto", "agency_coordinator", "AG-002"))


@functools.cache
def _password_hash() -> str:
    return hash_password(PASSWORD)
_TOKEN = re.compile(r'name="csrftoken" value="([^"]+)"')
_FORM_TOKEN = re.compile(r'action="([^"]+)"[^>]*>\s*<input type="hidden" name="csrftoken" value="[^"]+">'
                         r'\s*<input type="hidden" name="form_token" value="([^"]+)">')


class InProcessLedger:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = MemoryStore()
        self.processor = BatchProcessor(self.store, log_id="web", plan=settings.plan, topics=settings.topics,
                                        partitions=settings.partitions, clock=lambda: datetime.now(UTC))
        self.offsets: dict[tuple[str, int], int] = defaultdict(int)
        self.hold = False
        self.held: list[Event] = []
        self.published: list[Event] = []

    def publish(self, event: Event) -> None:
        self.published.append(event)
        if self.hold:
            self.held.append(event)
            return
        self.fold(event)

    def fold(self, *events: Event) -> None:
        records = []
        for event in events:
            parts = range(self.settings.partitions) if type(event).BROADCAST else [
                partition_for(event.account_id.encode(), self.settings.partitions)]
            topic = topic_for(event, self.settings.topics)
            for p in parts:
                offset = self.offsets[(topic, p)]
                self.offsets[(topic, p)] += 1
                key = None if type(event).BROADCAST else event.account_id.encode()
                records.append(Record(topic=topic, partition=p, offset=offset, key=key, value=encode(event)))
        result = self.processor.process(records)
        self.store.commit_batch(result.write)
        self.processor.committed(result)

    def release(self) -> None:
        held, self.held = self.held, []
        self.fold(*held)


def make_web(settings: Settings | None = None) -> tuple[TestClient, InProcessLedger, MemoryUserStore, WebContext]:
    settings = settings or Settings(partitions=2)
    ledger = InProcessLedger(settings)
    users = MemoryUserStore()
    for login, role, agency in PEOPLE:  # one argon2 hash for all: hashing is slow on purpose
        users._users[login] = (User(login, login.title(), role, agency), _password_hash())
    ctx = WebContext(settings=settings, stores=StorePool(lambda: ledger.store, 1), users=users,
                     publish=ledger.publish, read_archive=memory_archive_reader(ledger.store),
                     secret="test-secret-" + "x" * 32, replays=ReplayCache(2))
    return TestClient(create_app(ctx), follow_redirects=False), ledger, users, ctx


def csrf(html: str) -> str:
    found = _TOKEN.search(html)
    assert found, "no CSRF token on the page"
    return found.group(1)


def login(client: TestClient, who: str, password: str = PASSWORD) -> Any:
    page = client.get("/login")
    return client.post("/login", data={"login": who, "password": password, "next": "/queue",
                                       "csrftoken": csrf(page.text)})


def form_tokens(html: str) -> dict[str, str]:
    """action URL -> the form token of the form posting there."""
    return {m.group(1): m.group(2) for m in _FORM_TOKEN.finditer(html)}


def post_form(client: TestClient, page_url: str, action_url: str, **fields: str) -> Any:
    """Submit a form of a page as a browser would: the page's CSRF token and the form's own token."""
    page = client.get(page_url)
    assert page.status_code == 200, page.text
    tokens = form_tokens(page.text)
    assert action_url in tokens, f"no form posting to {action_url} on {page_url}: {sorted(tokens)}"
    return client.post(action_url, data={"csrftoken": csrf(page.text), "form_token": tokens[action_url], **fields})
