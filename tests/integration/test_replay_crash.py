"""Replay equals live after a randomized workload whose worker was SIGKILLed mid-way and restarted;
the hash chain written across the crash is intact."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from pathlib import Path

from test_crash_recovery import UpProcess, wait_for  # same directory (pytest's rootdir-less import)

from processor.app import open_ledger
from processor.entrypoints.demo import generate
from processor.settings import Settings
from projections.postgres import PostgresStore
from replay.verify import verify


def test_replay_equals_live_after_a_sigkilled_worker(settings_factory: Callable[..., Settings], tmp_path: Path
                                                     ) -> None:
    seed = random.Random().randrange(10_000)
    settings = settings_factory(consumer_group=f"replay-crash-{uuid.uuid4().hex[:8]}", batch_events_max=100,
                                session_timeout_ms=3000, heartbeat_interval_ms=1000)
    program = generate(members=120, months=4, seed=seed)
    events = [e for _, phase in program.phases for e in phase] + list(program.exact_duplicates)
    up = UpProcess(settings, tmp_path)
    try:
        with open_ledger(settings) as ledger:
            store = ledger.store()
            pub = ledger.publisher()
            try:
                pub.publish(events)
                pub.flush()
                total = pub.records_sent
            finally:
                pub.close()
            up.start()
            wait_for(lambda: store.counts().received >= total * 0.2, up, "a fifth of the records")
            up.sigkill()
            at_kill = store.counts().received
            assert at_kill < total, "the worker finished before it could be killed: not a crash mid-way"
            up.start()
            total += program.derived  # what the ledger posts itself: cash applications' payments, line reports
            wait_for(lambda: store.counts().received >= total, up, f"all {total} records")
            assert up.stop() == 0, up.log_tail()
            applied = store.counts().applied
        report = verify(ledger.dsn, settings.plan)
        assert report.mismatches == [], f"seed {seed}: {report.mismatches[:3]}"
        assert report.events_replayed == applied
        pg = PostgresStore(ledger.dsn)
        try:
            chain = pg.verify_archive()
        finally:
            pg.close()
        assert chain.intact and chain.events_checked == applied, f"seed {seed}: {chain}"
    finally:
        up.stop()
