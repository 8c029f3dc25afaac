"""Replay benchmark: N replay processes beside an N-process ceiling, measured in the same run.

1. A synthetic archive is built fast: the demo program (``processor.entrypoints.demo.generate``) sized to about
   ``--events`` archived events, broadcast copies per partition, canonical bodies and the hash chain,
   COPYed straight into ``archive`` (no Kafka, no processor). The program is generated
   ``--members-per-part`` members at a time (20,000: about 760k events) and spooled to disk by phase, then
   written phase after phase, so the archive is in business order as one program's whatever its size
   and the benchmark's own memory stays bounded (``build_peak_rss_mb``, ``bench_peak_rss_mb``).
2. Ceiling: N processes (spawned), each COPYing its partitions out of one exported snapshot and decoding
   every body, no fold (bench/_replay_ceiling.py).
3. Replay: the streaming replay (replay.stream, a group of accounts at a time, the processor's pure
   functions) in the same number of spawned processes (replay.parallel: partitions, cut into account
   ranges), over the same exported snapshot.
4. Statements: one account's statement as of a random (E, R), ``--samples`` times; the 95th percentile.

Each of 2 and 3 is timed wall clock, process start-up included for both, ``--repeat`` times (median);
``peak_rss_mb`` is the largest sum of the resident sets of the replaying processes (the pool's workers;
not multiprocessing's resource tracker, not the coordinator), sampled every 50 ms, ``peak_rss_each_mb``
the largest of one. With ``--workers 2`` (the default) the single-process figures are measured too
(``by_workers``) unless ``--no-single``; ``--samples 0`` skips the statements.

    python bench/replay.py --events 1000000 [--workers 2] [--repeat 3] [--no-single] [--samples N] [--json]
        [--database-url DSN] [--members-per-part N]

With --json the last line is one JSON object: replay_events_per_second, ceiling_events_per_second,
ratio_vs_ceiling, statement_p95_ms, peak_rss_mb, peak_rss_each_mb (all for N = --workers processes),
workers, by_workers (the same per process count), events, accounts, parts, rejected, build_seconds,
build_peak_rss_mb (this process after the build) and bench_peak_rss_mb (at the end). Without
--database-url an embedded PostgreSQL is started in a temporary directory and stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import resource
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import psutil  # noqa: E402
import psycopg  # noqa: E402

from bench._measure import LoadWatch, PeakRss, await_reaped, postgres_cpu_s, server_children  # noqa: E402
from bench._replay_ceiling import decode_parallel  # noqa: E402
from events import codec  # noqa: E402
from events.topics import topic_types  # noqa: E402
from events.types import Event, tag_of  # noqa: E402
from processor.batch import partition_for  # noqa: E402
from processor.entrypoints.demo import Program, generate  # noqa: E402
from processor.settings import PlanSettings, TopicSettings  # noqa: E402
from processor.tables import progress_bar  # noqa: E402
from projections.chain import GENESIS, link  # noqa: E402
from projections.postgres import PostgresStore  # noqa: E402
from replay.archive import connect, read_archive  # noqa: E402
from replay.fold import replay  # noqa: E402
from replay.parallel import replay_parallel  # noqa: E402
from replay.statements import build_report  # noqa: E402

EVENTS_PER_MEMBER_YEAR = 38.0  # the demo program: about 76.5k archived events for 2,000 members, 12 months
MEMBERS_PER_PART_MAX = 20_000  # members generated at once: about 760k events, 500 MB of the builder's memory
PARTS_MAX = 100  # parts of one program: their seeds stay distinct modulo 100 (account and payer ids carry it)
ACCOUNTS_SAMPLED_MAX = 10_000  # account ids kept (a uniform sample) to pick the statements' accounts from
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


@dataclass(slots=True)
class Archive:
    """What ``build_archive`` wrote: rows, accounts (a uniform sample of them, for the statements),
    the span of recorded times, and the builder's own parts."""

    rows: int
    accounts: int
    sampled_accounts: list[str]
    first_recorded: datetime
    last_recorded: datetime
    parts: int
    members: int


def _program_parts(members: int, seed: int, members_per_part: int) -> Iterator[tuple[int, int, Program]]:
    """The program of ``members`` members generated a part at a time: consecutive member ranges of
    about equal size, each part with a seed of its own (``seed + k``: its event ids and draws)."""
    parts = -(-members // members_per_part)
    if parts > PARTS_MAX:
        raise ValueError(f"{members:,} members in parts of {members_per_part:,} make {parts} parts, more than"
                         f" {PARTS_MAX} (account ids carry the seed modulo 100); raise members_per_part")
    for k in range(parts):
        lo, hi = members * k // parts, members * (k + 1) // parts
        yield k, hi - lo, generate(members=hi - lo, months=12, seed=seed + k, first_member=lo)


def _broadcast_key(event: Event) -> tuple[str, date, str | None]:
    return tag_of(type(event)), event.effective_on, getattr(event, "rate_id", None)


def _split_phase(name: str, phase: list[Event]) -> tuple[list[Event], list[Event], list[Event]]:
    """(leading broadcasts, account events, trailing broadcasts) of one phase of a part."""
    i, j = 0, len(phase)
    while i < j and type(phase[i]).BROADCAST:
        i += 1
    while j > i and type(phase[j - 1]).BROADCAST:
        j -= 1
    middle = phase[i:j]
    if any(type(e).BROADCAST for e in middle):
        raise RuntimeError(f"phase {name!r} has a broadcast event between account events: the parts cannot be"
                           " laid out as one program")
    return phase[:i], middle, phase[j:]


class _Spool:
    """Each phase's account events of every part, in part order, in a file per phase (canonical bodies,
    length-prefixed), so that the archive is written phase by phase as one program's would be, while
    only one part is held in memory."""

    _LEN = struct.Struct("<I")

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.counts: list[int] = []

    def _path(self, phase: int) -> Path:
        return self.directory / f"phase-{phase:04d}.bin"

    def write(self, phase: int, events: list[Event]) -> None:
        while len(self.counts) <= phase:
            self.counts.append(0)
        with self._path(phase).open("ab") as out:
            for event in events:
                body = codec.encode(event)
                out.write(self._LEN.pack(len(body)))
                out.write(body)
        self.counts[phase] += len(events)

    def read(self, phase: int) -> Iterator[bytes]:
        """The phase's bodies in the order written; the file is removed once read."""
        path = self._path(phase)
        if not path.exists():
            return
        with path.open("rb") as f:
            while header := f.read(self._LEN.size):
                (size,) = self._LEN.unpack(header)
                body = f.read(size)
                if len(body) != size:
                    raise RuntimeError(f"{path}: truncated spool record")
                yield body
        path.unlink()


def build_archive(dsn: str, events: int, partitions: int, seed: int,
                  members_per_part: int = MEMBERS_PER_PART_MAX) -> Archive:
    """COPY a synthetic archive of about ``events`` rows in bounded memory.

    The demo program of ``events / 38`` members is generated ``members_per_part`` members at a time
    (``_program_parts``); each part's account events are spooled to disk by phase and its broadcast
    events checked against the first part's (rates, cycle and day closes: one program's, kept once).
    Then the archive is written phase after phase (leading broadcasts, every part's account events,
    trailing broadcasts), so it is in business order as one program's, with per-partition offsets and
    hash chain as the processor leaves them. Memory: one part and the spool's read buffer."""
    members = max(20, round(events / EVENTS_PER_MEMBER_YEAR))
    topics = _topic_of(TopicSettings())
    rng = random.Random(seed)
    sampled: list[str] = []  # reservoir sample of the accounts (Algorithm R)
    accounts = 0
    names: list[str] = []
    heads_of: list[list[Event]] = []
    tails_of: list[list[Event]] = []
    parts = 0
    with tempfile.TemporaryDirectory(prefix="bench-replay-spool-") as spool_dir, progress_bar() as progress:
        spool = _Spool(Path(spool_dir))
        generating = progress.add_task("generating the program", total=members)
        tick = time.perf_counter()
        for k, size, program in _program_parts(members, seed, members_per_part):
            parts += 1
            phase_names = [name for name, _ in program.phases]
            if k == 0:
                names = phase_names
            elif phase_names != names:
                raise RuntimeError(f"part {k} has other phases than part 0")
            part_accounts: set[str] = set()
            for i, (name, phase) in enumerate(program.phases):
                head, middle, tail = _split_phase(name, phase)
                if k == 0:
                    heads_of.append(head)
                    tails_of.append(tail)
                elif ([_broadcast_key(e) for e in head] != [_broadcast_key(e) for e in heads_of[i]]
                      or [_broadcast_key(e) for e in tail] != [_broadcast_key(e) for e in tails_of[i]]):
                    raise RuntimeError(f"part {k}, phase {name!r}: broadcast events differ from part 0's")
                part_accounts.update(e.account_id for e in middle)
                spool.write(i, middle)
            for account in sorted(part_accounts):
                accounts += 1
                if len(sampled) < ACCOUNTS_SAMPLED_MAX:
                    sampled.append(account)
                else:
                    j = rng.randrange(accounts)
                    if j < ACCOUNTS_SAMPLED_MAX:
                        sampled[j] = account
            del program, phase, head, middle, tail  # before the next part is generated
            progress.advance(generating, size)
            now = time.perf_counter()
            _log(f"part {k + 1}: {size:,} members generated and spooled in {now - tick:.1f} s"
                 f" ({sum(spool.counts):,} account events so far)")
            tick = now
        broadcasts = sum(len(h) + len(t) for h, t in zip(heads_of, tails_of, strict=True))
        total = sum(spool.counts) + broadcasts * partitions
        writing = progress.add_task("writing the archive", total=total)
        _log(f"writing {total:,} archive rows")
        offsets: dict[tuple[str, int], int] = {}
        heads: dict[int, bytes] = {}
        t0 = datetime(2026, 1, 1, tzinfo=UTC)
        n = 0
        with psycopg.connect(dsn) as conn, conn.cursor() as cur:
            with cur.copy(f"COPY archive ({_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(_TYPES)

                def emit(event: Event, body: bytes) -> None:
                    nonlocal n
                    digest = codec.body_hash(body)
                    tag = tag_of(type(event))
                    if type(event).BROADCAST:
                        targets = [(p, f"{event.event_id}@p{p}") for p in range(partitions)]
                    else:
                        targets = [(partition_for(event.account_id.encode(), partitions), event.event_id)]
                    topic = topics[tag]
                    for partition, dedupe in targets:
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
                        if n % 50_000 == 0:
                            progress.update(writing, completed=n)

                for i in range(len(names)):
                    for event in heads_of[i]:
                        emit(event, codec.encode(event))
                    for body in spool.read(i):
                        emit(codec.decode_input(body), body)
                    for event in tails_of[i]:
                        emit(event, codec.encode(event))
            cur.executemany("INSERT INTO archive_chain_head (partition, chain_hash) VALUES (%s, %s)"
                            " ON CONFLICT (partition) DO UPDATE SET chain_hash = excluded.chain_hash",
                            list(heads.items()))
            cur.execute("ANALYZE archive")
        progress.update(writing, completed=n)
    if n != total:
        raise RuntimeError(f"wrote {n:,} archive rows, expected {total:,}")
    return Archive(rows=n, accounts=accounts, sampled_accounts=sorted(sampled), first_recorded=t0,
                   last_recorded=t0 + timedelta(milliseconds=n), parts=parts, members=members)


def _workers_rss() -> list[int]:
    """This process's spawned workers (the replay or ceiling pool), once they run their own interpreter:
    a child caught between fork and exec still shows this process's resident set (the builder's, some
    hundred MB), and multiprocessing's resource tracker is no replaying process. PostgreSQL is not among
    the children (pg_ctl daemonizes the postmaster)."""
    pids = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "--multiprocessing-fork" in child.cmdline():
                pids.append(child.pid)
        except psutil.Error:
            continue
    return pids


def postmaster_of(dsn: str) -> int | None:
    """The postmaster serving ``dsn`` when it runs on this machine (the parent of our backend), else None."""
    with psycopg.connect(dsn) as conn:  # asked while the backend lives: it exits with the connection
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        try:
            parent = psutil.Process(int(row[0])).parent() if row else None
            return parent.pid if parent is not None and parent.name() == "postgres" else None
        except psutil.Error:
            return None


def _cpu_s(postmaster: int | None, since: set[int] | None = None) -> dict[str, float]:
    """CPU seconds so far: reaped children (the pool's workers, joined when the pool shuts down), this
    process (the coordinator, merging results), and the PostgreSQL server when it is local (``since``:
    its processes at the start; the backends opened after are waited for until reaped)."""
    if postmaster is not None and since is not None:
        await_reaped(postmaster, since)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    me = resource.getrusage(resource.RUSAGE_SELF)
    return {"workers": children.ru_utime + children.ru_stime, "coordinator": me.ru_utime + me.ru_stime,
            "postgres": postgres_cpu_s(postmaster) if postmaster is not None else 0.0}


def _measured(n: int, seconds: float, before: dict[str, float], after: dict[str, float], rss: PeakRss
              ) -> dict[str, Any]:
    cpu = {k: (after[k] - before[k]) / n * 1e6 for k in before} if n else {}
    return {"events": n, "seconds": seconds, "peak_rss_mb": rss.peak_mb, "peak_rss_each_mb": rss.peak_each_mb,
            "cpu_us_per_event": cpu}


def measure_ceiling(dsn: str, workers: int, postmaster: int | None = None) -> dict[str, Any]:
    """COPY out and decode in ``workers`` processes, no fold."""
    with connect(dsn) as conn, PeakRss(_workers_rss) as rss:
        server = server_children(postmaster) if postmaster is not None else None
        before = _cpu_s(postmaster)
        start = time.perf_counter()
        n = decode_parallel(conn, dsn, workers=workers)
        elapsed = time.perf_counter() - start
        after = _cpu_s(postmaster, since=server)
        conn.rollback()
    return _measured(n, elapsed, before, after, rss)


def _replay_alone(dsn: str, plan_json: str) -> tuple[int, int]:
    """(In a spawned process, as the ceiling's one worker is.) The streaming replay of the whole archive."""
    from replay.parallel import Discard
    from replay.stream import stream_archive

    with connect(dsn) as conn:
        totals = stream_archive(conn, PlanSettings.model_validate_json(plan_json), Discard(), strict=False)
        conn.rollback()
    return totals.events_replayed, len(totals.rejections)


def measure_replay(dsn: str, plan: PlanSettings, workers: int, postmaster: int | None = None) -> dict[str, Any]:
    """The streaming replay (replay.stream: a group of accounts at a time) in ``workers`` spawned
    processes, split by partition and account range over one exported snapshot (replay.parallel)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # The ledger replays a small archive in the caller's process; the benchmark compares N processes
    # with the ceiling's N, so it always spawns them (one included).
    with connect(dsn) as conn, PeakRss(_workers_rss) as rss:
        server = server_children(postmaster) if postmaster is not None else None
        before = _cpu_s(postmaster)
        start = time.perf_counter()
        if workers < 2:
            with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
                n, rejected = pool.submit(_replay_alone, dsn, plan.model_dump_json()).result()
        else:
            totals, _ = replay_parallel(conn, dsn, plan, workers=workers, strict=False, events_per_process_min=1)
            n, rejected = totals.events_replayed, len(totals.rejections)
        elapsed = time.perf_counter() - start
        after = _cpu_s(postmaster, since=server)
        conn.rollback()
    return {**_measured(n, elapsed, before, after, rss), "rejected": rejected}


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


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def compare(dsn: str, plan: PlanSettings, workers: int, repeat: int, postmaster: int | None) -> dict[str, Any]:
    """Ceiling and replay with ``workers`` processes, alternated ``repeat`` times; medians (the ratio per
    repetition, then its median). CPU per event is summed over the workers, the coordinator and PostgreSQL;
    its ratio says what the rates would be where the cores are not shared."""
    runs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for i in range(repeat):
        top = measure_ceiling(dsn, workers, postmaster)
        rep = measure_replay(dsn, plan, workers, postmaster)
        if rep["events"] != top["events"]:
            raise RuntimeError(f"replay folded {rep['events']} events, the ceiling read {top['events']}")
        runs.append((top, rep))
        _log(f"{workers} process(es), {i + 1}/{repeat}: ceiling {top['events'] / top['seconds']:,.0f} events/s"
             f" ({sum(top['cpu_us_per_event'].values()):.1f} us CPU/event), replay"
             f" {rep['events'] / rep['seconds']:,.0f} events/s ({sum(rep['cpu_us_per_event'].values()):.1f} us"
             f" CPU/event), replay peak RSS {rep['peak_rss_mb']:,.0f} MB")

    def med(values: Iterable[float], digits: int = 1) -> float:
        return round(_median(list(values)), digits)

    def cpu(which: int) -> dict[str, float]:
        return {k: med(r[which]["cpu_us_per_event"][k] for r in runs) for k in runs[0][which]["cpu_us_per_event"]}

    return {
        "replay_events_per_second": med(rep["events"] / rep["seconds"] for _, rep in runs),
        "ceiling_events_per_second": med(top["events"] / top["seconds"] for top, _ in runs),
        "ratio_vs_ceiling": med(((rep["events"] / rep["seconds"]) / (top["events"] / top["seconds"])
                                 for top, rep in runs), 3),
        "replay_cpu_us_per_event": cpu(1),
        "ceiling_cpu_us_per_event": cpu(0),
        "cpu_ratio_vs_ceiling": med((sum(top["cpu_us_per_event"].values()) / sum(rep["cpu_us_per_event"].values())
                                     for top, rep in runs), 3),
        "peak_rss_mb": med(rep["peak_rss_mb"] for _, rep in runs),
        "peak_rss_each_mb": med(rep["peak_rss_each_mb"] for _, rep in runs),
        "ceiling_peak_rss_mb": med(top["peak_rss_mb"] for top, _ in runs),
        "rejected": runs[-1][1]["rejected"],
    }


def _peak_rss_mb() -> float:
    """This process's peak resident set so far (Linux: ru_maxrss in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run(events: int, *, partitions: int = 4, samples: int = 200, seed: int = 7,
        database_url: str | None = None, workers: int = 2, repeat: int = 3, single: bool = True,
        members_per_part: int = MEMBERS_PER_PART_MAX) -> dict[str, Any]:
    """Build, then measure ``workers`` processes (and 1 too unless ``single`` is False), then ``samples``
    statements (none: 0)."""
    plan = PlanSettings()
    load = LoadWatch()
    with database(database_url) as dsn:
        store = PostgresStore(dsn)
        store.migrate()
        store.close()
        start = time.perf_counter()
        archive = build_archive(dsn, events, partitions, seed, members_per_part)
        build_seconds = time.perf_counter() - start
        build_peak = _peak_rss_mb()
        _log(f"archive: {archive.rows:,} events of {archive.accounts:,} accounts ({archive.parts} part(s))"
             f" COPYed in {build_seconds:.1f} s, benchmark peak RSS {build_peak:,.0f} MB")
        postmaster = postmaster_of(dsn)
        counts = sorted({1, workers}) if single else [workers]
        by_workers = {str(n): compare(dsn, plan, n, repeat, postmaster) for n in counts}
        statement_ms = measure_statements(dsn, plan, archive.sampled_accounts, archive.first_recorded,
                                          archive.last_recorded, samples, seed)
    main = by_workers[str(workers)]
    return {
        "events": archive.rows,
        "accounts": archive.accounts,
        "parts": archive.parts,
        "workers": workers,
        "replay_events_per_second": main["replay_events_per_second"],
        "ceiling_events_per_second": main["ceiling_events_per_second"],
        "ratio_vs_ceiling": main["ratio_vs_ceiling"],
        "statement_p95_ms": round(p95(statement_ms), 2),
        "peak_rss_mb": main["peak_rss_mb"],
        "peak_rss_each_mb": main["peak_rss_each_mb"],
        "replay_cpu_us_per_event": main["replay_cpu_us_per_event"],
        "ceiling_cpu_us_per_event": main["ceiling_cpu_us_per_event"],
        "cpu_ratio_vs_ceiling": main["cpu_ratio_vs_ceiling"],
        "by_workers": by_workers,
        "statement_median_ms": round(sorted(statement_ms)[len(statement_ms) // 2], 2) if statement_ms else 0.0,
        "statement_samples": len(statement_ms),
        "rejected": main["rejected"],
        "repeat": repeat,
        "build_seconds": round(build_seconds, 1),
        "build_peak_rss_mb": build_peak,
        "bench_peak_rss_mb": _peak_rss_mb(),
        **load.figures(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000, help="archived events to build (about)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--samples", type=int, default=200, help="statements timed (0: none)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--database-url", help="a PostgreSQL server DSN (default: an embedded one)")
    parser.add_argument("--workers", type=int, default=2,
                        help="processes of the replay and of its ceiling (default 2; 1 process is measured too)")
    parser.add_argument("--repeat", type=int, default=3, help="measurements of each; medians (default 3)")
    parser.add_argument("--no-single", action="store_true",
                        help="measure only --workers processes, not 1 process too (a long run finishes sooner)")
    parser.add_argument("--members-per-part", type=int, default=MEMBERS_PER_PART_MAX,
                        help=f"members of the program generated at once (default {MEMBERS_PER_PART_MAX:,})")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run(args.events, partitions=args.partitions, samples=args.samples, seed=args.seed,
                 database_url=args.database_url, workers=args.workers, repeat=args.repeat,
                 single=not args.no_single, members_per_part=args.members_per_part)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"archive                 {result['events']:>12,} events, median of {result['repeat']}")
        for n, r in result["by_workers"].items():
            print(f"{n} process(es): replay {r['replay_events_per_second']:>10,.0f} events/s, ceiling (COPY out +"
                  f" decode) {r['ceiling_events_per_second']:>10,.0f} events/s, ratio {r['ratio_vs_ceiling']:.3f},"
                  f" replay peak RSS {r['peak_rss_mb']:,.0f} MB (largest process {r['peak_rss_each_mb']:,.0f} MB)")
            replay_cpu = sum(r["replay_cpu_us_per_event"].values())
            ceiling_cpu = sum(r["ceiling_cpu_us_per_event"].values())
            print(f"    CPU us/event: replay {replay_cpu:.1f}, ceiling {ceiling_cpu:.1f}"
                  f" (ceiling / replay {r['cpu_ratio_vs_ceiling']:.3f})")
        print(f"statement p95           {result['statement_p95_ms']:>12.2f} ms  (median"
              f" {result['statement_median_ms']:.2f} ms, {result['statement_samples']} samples)")
        print(f"build                   {result['build_seconds']:>12.1f} s   ({result['parts']} part(s); benchmark"
              f" peak RSS {result['build_peak_rss_mb']:,.0f} MB after the build,"
              f" {result['bench_peak_rss_mb']:,.0f} MB at the end)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
