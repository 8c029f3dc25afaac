"""The processor loop's drain: a rebalance that arrives while a commit is in flight."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from processor.runtime import ProcessorLoop
from processor.settings import Settings
from projections.memory import MemoryStore
from projections.model import BatchWrite
from tests.unit.builders import LOG, Feed, bill, enroll


class _SlowStore(MemoryStore):
    """Commits only once the test lets it, so a drain can be caught waiting for it."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def commit_batch(self, batch: BatchWrite) -> None:
        assert self.release.wait(10), "the test never released the commit"
        super().commit_batch(batch)


class _OffsetCommits:
    """Stands in for the consumer's offset commit, the one consumer call drain makes."""

    def __init__(self) -> None:
        self.offsets: list[dict[Any, int]] = []

    async def commit(self, offsets: dict[Any, int]) -> None:
        self.offsets.append(offsets)


def test_a_rebalance_during_a_commit_waits_for_it_before_the_partitions_leave() -> None:
    async def scenario() -> None:
        store = _SlowStore()
        loop = ProcessorLoop(Settings(kafka_bootstrap_servers="x:1", database_url="x"), "x:1", store, log_id=LOG)
        loop.consumer = _OffsetCommits()  # type: ignore[assignment]
        result = loop.processor.process(Feed().records(enroll(), bill(78_412)))
        loop._pending = (result, asyncio.create_task(asyncio.to_thread(loop._commit, result)))
        batch = asyncio.create_task(loop.drain())  # the loop waits for its batch's commit
        await asyncio.sleep(0.05)
        revoked = asyncio.create_task(loop.drain())  # what on_partitions_revoked does first
        await asyncio.sleep(0.1)
        assert not revoked.done(), "the partitions would leave before the commit is in the store"
        assert store.positions(LOG) == {}
        store.release.set()
        assert await asyncio.wait_for(revoked, 5) is True
        assert store.positions(LOG), "once the revoke goes on, the new owner reads the committed positions"
        assert await asyncio.wait_for(batch, 5) is True

    asyncio.run(scenario())


def test_a_drain_with_nothing_in_flight_returns_at_once() -> None:
    async def scenario() -> bool:
        loop = ProcessorLoop(Settings(kafka_bootstrap_servers="x:1", database_url="x"), "x:1", MemoryStore(),
                             log_id=LOG)
        return await asyncio.wait_for(loop.drain(), 1)

    assert asyncio.run(scenario()) is True
