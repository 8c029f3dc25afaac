"""Replay benchmark: events per second folding the archive, beside the ceiling measured in the same run.

1. A synthetic archive is built fast: the demo program (``processor.entrypoints.demo.generate``) sized to about
   ``--events`` archived events, broadcast copies per partition, canonical bodies and the hash chain,
   COPYed straight into ``archive`` (no Kafka, no processor).
2. Ceiling: the archive streamed out with COPY (replay.archive.read_archive) and msgspec-decoded, no fold.
3. Replay: the archive folded by replay.stream (a group of accounts at a time, the processor's pure
   functions), in a process of its own so that its peak RSS is the replay's (peak_rss_mb); with
   ``--in-order`` also the fold of the whole archive in seq order holding every account (replay.fold).
4. Statements: one account's statement as of a random (E, R), ``--samples`` times; the 95th percentile.

    python bench/replay.py --events 1000000 [--json] [--database-url DSN]

With --json: replay_events_per_second, ceiling_events_per_second, ratio_vs_ceiling, statement_p95_ms
(and events, rejected, build_seconds). Without --database-url an embedded PostgreSQL is started in a
temporary directory and stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import psycopg  # noqa: E402

from events import codec  # noqa: E402
from events.topics import topic_types  # noqa: E402
from events.types import tag_of  # noqa: E402
from processor.batch import partition_for  # noqa: E402
from processor.entrypoints.demo import generate  # noqa: E402
from processor.settings import PlanSettings, TopicSettings  # noqa: E402
from projections.chain import GENESIS, link  # noqa: E402
from projections.postgres import PostgresStore  # noqa: E402
from replay.archive import connect, read_archive  # noqa: E402
from replay.fold import replay  # noqa: E402
from replay.statements import build_report  # noqa: E402

EVENTS_PER_MEMBER_YEAR = 38.0  # the demo program: about 76.5k archived events for 2,000 members, 12 months
_COLUMNS = (
    'log_id, topic, partition, "offset", dedupe_key, event_id, event_type, account_id, effective_on,'
    " occurred_at, recorded_at, body, body_hash, chain_hash"
)
_TYPES = ["text", "text", "int4", "int8", "text", "text", "text", "text", "date", "timestamptz", "timestamptz",
          "bytea", "bytea", "bytea"]


def _log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _topic_of(topics: TopicSettings) -> dict[str, str]:
    """Event tag -> the input topic it belongs on (the processor's own table)."""
    return {tag: topic for topic, tags in topic_types(topics).items() for tag in tags}


def build_archive(dsn: str, events: int, partitions: int, seed: int) -> tuple[int, list[str], datetime, datetime]:
    """COPY a synthetic archive of about ``events`` rows; returns (rows, accounts, first and last recorded_at)."""
    members = max(20, round(events / EVENTS_PER_MEMBER_YEAR))
    program = generate(members=members, months=12, seed=seed)
    topics = _topic_of(TopicSettings())
    offsets: dict[tuple[str, int], int] = {}
    heads: dict[int, bytes] = {}
    accounts: set[str] = set()
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    n = 0
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY archive ({_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(_TYPES)
            for _name, phase in program.phases:
                for event in phase:
                    body = codec.encode(event)
                    digest = codec.body_hash(body)
                    tag = tag_of(type(event))
                    if type(event).BROADCAST:
                        targets = [(p, f"{event.event_id}@p{p}") for p in range(partitions)]
                    else:
                        accounts.add(event.account_id)
                        targets = [(partition_for(event.account_id.encode(), partitions), event.event_id)]
                    for partition, dedupe in targets:
                        topic = topics[tag]
                        offset = offsets.get((topic, partition), 0)
                        offsets[(topic, partition)] = offset + 1
                        recorded = t0 + timedelta(milliseconds=n)
                        chained = link(heads.get(partition, GENESIS), body_hash=digest, log_id="bench", topic=topic,
                                       partition=partition, offset=offset, dedupe_key=dedupe,
                                       event_id=event.event_id, event_type=tag, account_id=event.account_id,
                                       effective_on=event.effective_on, occurred_at=event.occurred_at,
                                       recorded_at=recorded)
                        heads[partition] = chained
                        copy.write_row(("bench", topic, partition, offset, dedupe, event.event_id, tag,
                                        event.account_id, event.effective_on, event.occurred_at, recorded, body,
                                        digest, chained))
                        n += 1
        cur.executemany("INSERT INTO archive_chain_head (partition, chain_hash) VALUES (%s, %s)"
                        " ON CONFLICT (partition) DO UPDATE SET chain_hash = excluded.chain_hash",
                        list(heads.items()))
        cur.execute("ANALYZE archive")
    return n, sorted(accounts), t0, t0 + timedelta(milliseconds=n)


def measure_ceiling(dsn: str) -> tuple[int, float]:
    """COPY out and decode, no fold."""
    with connect(dsn) as conn:
        start = time.perf_counter()
        n = 0
        decode = codec.decode_input
        for row in read_archive(conn):
            decode(row.body)
            n += 1
        elapsed = time.perf_counter() - start
        conn.rollback()
    return n, elapsed


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _replay_here(dsn: str, plan_json: str, in_order: bool) -> tuple[int, int, float, float]:
    """(In a fresh process.) Replay the archive: events, rejected, seconds, peak RSS in MB."""
    from replay.parallel import Discard
    from replay.stream import stream_archive

    plan = PlanSettings.model_validate_json(plan_json)
    with connect(dsn) as conn:
        start = time.perf_counter()
        if in_order:
            result = replay(read_archive(conn), plan, strict=False)
            n, rejected = result.events_replayed, len(result.rejected)
        else:
            totals = stream_archive(conn, plan, Discard(), strict=False)
            n, rejected = totals.events_replayed, len(totals.rejections)
        elapsed = time.perf_counter() - start
        conn.rollback()
    return n, rejected, elapsed, _peak_rss_mb()


def measure_replay(dsn: str, plan: PlanSettings, *, in_order: bool = False) -> tuple[int, int, float, float]:
    """Events, rejected, seconds and peak RSS (MB) of a replay in a process of its own."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_replay_here, dsn, plan.model_dump_json(), in_order).result()


class _PeakRss:
    """A worker's consumer that keeps nothing and reports its process's peak RSS."""

    def group(self, group: Any) -> None:
        pass

    def partition(self, part: Any) -> None:
        pass

    def outcome(self) -> float:
        return _peak_rss_mb()


def peak_rss(_conn: Any) -> _PeakRss:
    return _PeakRss()


def measure_replay_parallel(dsn: str, plan: PlanSettings, workers: int) -> tuple[int, float, float, int]:
    """The same fold split by partition over up to ``workers`` processes (one exported snapshot; fewer on a
    small archive); the largest worker's peak RSS, and the processes used."""
    from replay.parallel import replay_parallel

    with connect(dsn) as conn:
        start = time.perf_counter()
        totals, rss = replay_parallel(conn, dsn, plan, workers=workers, strict=False, consumer=peak_rss)
        elapsed = time.perf_counter() - start
        conn.rollback()
    return totals.events_replayed, elapsed, max(rss, default=0.0), totals.processes


def measure_statements(dsn: str, plan: PlanSettings, accounts: list[str], first: datetime, last: datetime,
                       samples: int, seed: int) -> list[float]:
    """One account's statement as of a random (E, R): archive read (index on account), fold, report."""
    rng = random.Random(seed)
    span = (last - first).total_seconds()
    times = []
    with connect(dsn) as conn:
        for _ in range(samples):
            account = rng.choice(accounts)
            known_at = first + timedelta(seconds=rng.uniform(0, span))
            through = date(2026, rng.randint(1, 12), 1)
            start = time.perf_counter()
            res = replay(read_archive(conn, known_at=known_at, account_id=account), plan, strict=False)
            build_report(res, plan, known_at=known_at, through=through, account_id=account)
            times.append((time.perf_counter() - start) * 1000)
            conn.rollback()
    return times


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(0.95 * len(ordered)) - 1))] if ordered else 0.0


@contextlib.contextmanager
def database(url: str | None) -> Iterator[str]:
    """A fresh database: on the given server, or on an embedded PostgreSQL stopped at the end."""
    import uuid

    from psycopg import sql

    from processor.embedded import EmbeddedPostgres

    with contextlib.ExitStack() as stack:
        if url is None:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-replay-")))
            server = EmbeddedPostgres(tmp / "postgres")
            server.start()
            stack.callback(server.stop)
            url = server.dsn
        name = f"bench_replay_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield psycopg.conninfo.make_conninfo(url, dbname=name)
        finally:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def run(events: int, *, partitions: int = 4, samples: int = 200, seed: int = 7,
        database_url: str | None = None, workers: int = 2, in_order: bool = False) -> dict[str, Any]:
    plan = PlanSettings()
    with database(database_url) as dsn:
        store = PostgresStore(dsn)
        store.migrate()
        store.close()
        start = time.perf_counter()
        rows, accounts, first, last = build_archive(dsn, events, partitions, seed)
        build_seconds = time.perf_counter() - start
        _log(f"archive: {rows:,} events COPYed in {build_seconds:.1f} s")
        ceiling_n, ceiling_s = measure_ceiling(dsn)
        _log(f"ceiling: {ceiling_n:,} events decoded in {ceiling_s:.1f} s")
        replay_n, rejected, replay_s, rss = measure_replay(dsn, plan)
        _log(f"replay: {replay_n:,} events folded in {replay_s:.1f} s ({rejected} rejected), peak RSS {rss:.0f} MB")
        parallel_n, parallel_s, parallel_rss, processes = (measure_replay_parallel(dsn, plan, workers)
                                                           if workers > 1 else (0, 0.0, 0.0, 1))
        if workers > 1:
            _log(f"replay, {processes} of {workers} processes: {parallel_n:,} events folded in {parallel_s:.1f} s,"
                 f" peak RSS {parallel_rss:.0f} MB per process")
        in_order_n, _, in_order_s, in_order_rss = measure_replay(dsn, plan, in_order=True) if in_order else (
            0, 0, 0.0, 0.0)
        if in_order:
            _log(f"replay in seq order: {in_order_n:,} events folded in {in_order_s:.1f} s,"
                 f" peak RSS {in_order_rss:.0f} MB")
        statement_ms = measure_statements(dsn, plan, accounts, first, last, samples, seed)
    replay_eps = replay_n / replay_s if replay_s else 0.0
    ceiling_eps = ceiling_n / ceiling_s if ceiling_s else 0.0
    return {
        "events": rows,
        "replay_events_per_second": round(replay_eps, 1),
        "ceiling_events_per_second": round(ceiling_eps, 1),
        "ratio_vs_ceiling": round(replay_eps / ceiling_eps, 3) if ceiling_eps else 0.0,
        "statement_p95_ms": round(p95(statement_ms), 2),
        "peak_rss_mb": round(rss, 1),
        "replay_parallel_workers": workers,
        "replay_parallel_processes": processes,
        "replay_parallel_peak_rss_mb": round(parallel_rss, 1),
        "replay_parallel_events_per_second": round(parallel_n / parallel_s, 1) if parallel_s else 0.0,
        "ratio_parallel_vs_ceiling": round(parallel_n / parallel_s / ceiling_eps, 3)
        if parallel_s and ceiling_eps else 0.0,
        "statement_median_ms": round(sorted(statement_ms)[len(statement_ms) // 2], 2) if statement_ms else 0.0,
        "statement_samples": len(statement_ms),
        "rejected": rejected,
        **({"replay_in_order_events_per_second": round(in_order_n / in_order_s, 1) if in_order_s else 0.0,
            "replay_in_order_peak_rss_mb": round(in_order_rss, 1)} if in_order else {}),
        "build_seconds": round(build_seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000, help="archived events to build (about)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--samples", type=int, default=200, help="statements timed")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--database-url", help="a PostgreSQL server DSN (default: an embedded one)")
    parser.add_argument("--workers", type=int, default=2,
                        help="processes for the partition-parallel replay (also measured; 1 to skip)")
    parser.add_argument("--in-order", action="store_true",
                        help="also replay in seq order holding every account (the fold before replay.stream)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run(args.events, partitions=args.partitions, samples=args.samples, seed=args.seed,
                 database_url=args.database_url, workers=args.workers, in_order=args.in_order)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"archive                 {result['events']:>12,} events")
        print(f"replay (fold)           {result['replay_events_per_second']:>12,.0f} events/s")
        print(f"ceiling (COPY + decode) {result['ceiling_events_per_second']:>12,.0f} events/s")
        print(f"replay / ceiling        {result['ratio_vs_ceiling']:>12.3f}")
        print(f"replay peak RSS         {result['peak_rss_mb']:>12,.0f} MB")
        if result["replay_parallel_events_per_second"]:
            print(f"replay, {result['replay_parallel_processes']} processes    "
                  f"{result['replay_parallel_events_per_second']:>12,.0f} events/s"
                  f"  ({result['ratio_parallel_vs_ceiling']:.3f} of the ceiling)")
        print(f"statement p95           {result['statement_p95_ms']:>12.2f} ms  (median"
              f" {result['statement_median_ms']:.2f} ms, {result['statement_samples']} samples)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
