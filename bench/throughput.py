"""Throughput benchmark: the ledger beside an honest ceiling, the Faust baseline and a bare COPY, on topics
loaded before any clock starts, with CPU microseconds per event per process beside every rate.

Each run loads fresh input topics with the first ``--events`` events of the demo program (the project's
Publisher; broadcast events are one record per partition), before any clock starts. Then, one after the
other, each contender consumes those same records into a database of its own on the same server:

1. ceiling - the ledger's own processor loop (processor/runtime.py ProcessorLoop and BatchProcessor,
   in a subprocess) with a no-op fold: the same topics and a consumer group, the merge, decode and
   validate, dedupe by event id against the store, the archive COPY with its keys and hash chain,
   positions, offset commits, anchor checkpoints and the relay's outbox poll. Only the fold and the
   projections it would write are dropped, so this is what the ledger's mandatory work allows.
2. bare COPY - one process, no group, decode to dicts, COPY text into a two-column table without keys,
   chain or positions. Kept for comparison with earlier figures; it is NOT a ceiling of the ledger's work.
3. Faust baseline - an idiomatic Faust agent over the input topics, one upsert and one commit per event.
4. pipeline - the ledger itself (processor and relay, in a subprocess), the real fold.

Every contender is measured from the moment its first records are applied to the moment its last are
(start-up, imports and the group join are not in it): rate = records applied in that interval over its
length; CPU = user + system seconds each process spent in that interval, per record: the worker
("processor": the ledger's processor process, the Faust worker, or this process for the bare COPY), the
PostgreSQL server ("postgres": postmaster and all backends, the benchmark's own observer connection
excluded) and Tansu ("broker"). ``ledger_cpu_us_per_event`` is processor plus PostgreSQL of the
pipeline. Medians of ``--repeat`` runs; ratios are taken within each run, then the median.

    python bench/throughput.py --events 100000 --repeat 3 [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from bench._baselines import bare_copy, die_with_parent, faust_baseline, tail  # noqa: E402
from bench._measure import CpuSource, Interval, LoadWatch, postgres_cpu_s, process_cpu_s, watch  # noqa: E402
from events.publisher import Publisher  # noqa: E402
from events.topics import INPUT_TOPIC_FIELDS, TopicSettings  # noqa: E402
from events.types import Event  # noqa: E402
from processor.app import ensure_database  # noqa: E402
from processor.embedded import EmbeddedBroker, EmbeddedPostgres  # noqa: E402
from processor.settings import Settings  # noqa: E402
from processor.topics import ensure_topics  # noqa: E402

DEFAULT_PARTITIONS = 4
EVENTS_PER_MEMBER_YEAR = 38  # roughly, for the demo program's mix (FSA participants included)
CONTENDERS = ("ceiling", "bare_copy", "faust_baseline", "pipeline")  # the order of a run (see run_once)
PROCESSES = ("processor", "postgres", "broker")
WORKER_READY_TIMEOUT_S = 120.0


def _log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def program_events(n: int, seed: int) -> list[Event]:
    """The first n events of a realistic program (the demo's generator), in business order."""
    from processor.entrypoints.demo import generate

    program = generate(members=max(20, n // EVENTS_PER_MEMBER_YEAR + 20), months=12, seed=seed)
    return [e for _, phase in program.phases for e in phase][:n]


def dedupe_keys(events: list[Event], partitions: int) -> int:
    """Distinct (event id, partition of a broadcast copy) keys: the rows a deduplicating consumer keeps."""
    keys = {f"{e.event_id}@p{p}" for e in events if type(e).BROADCAST for p in range(partitions)}
    keys.update(e.event_id for e in events if not type(e).BROADCAST)
    return len(keys)


def input_topics(run_id: str) -> TopicSettings:
    """This run's topics: every name suffixed, so runs never share a record."""
    names = TopicSettings()
    return TopicSettings(**{f: f"{getattr(names, f)}.{run_id}" for f in TopicSettings.model_fields})


def contender_topics(shared: TopicSettings, contender: str) -> TopicSettings:
    """The run's input topics; output topics (dead letters, discrepancies, claims) of the contender's own."""
    return TopicSettings(**{f: getattr(shared, f) if f in INPUT_TOPIC_FIELDS else f"{getattr(shared, f)}.{contender}"
                            for f in TopicSettings.model_fields})


# --------------------------------------------------------------------------------------------------------
# The embedded stack
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stack:
    bootstrap: str
    server_dsn: str
    broker_pid: int
    postmaster_pid: int

    def sources(self, exclude_backends: list[int]) -> dict[str, CpuSource]:
        """CPU of the server (less the benchmark's own connections) and of the broker."""
        return {"postgres": lambda: postgres_cpu_s(self.postmaster_pid, exclude_backends),
                "broker": lambda: process_cpu_s(self.broker_pid)}


@contextlib.contextmanager
def embedded_stack() -> Iterator[Stack]:
    """Tansu and PostgreSQL of this run alone, in a temporary directory; stopped on every exit path."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    try:
        with EmbeddedBroker() as broker, EmbeddedPostgres(tmp / "pgdata") as database:
            assert broker.pid is not None and database.pid is not None
            yield Stack(broker.bootstrap, database.dsn, broker.pid, database.pid)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def fresh_database(server_dsn: str, name: str) -> Iterator[str]:
    dsn = ensure_database(server_dsn, name, reset=True)
    try:
        yield dsn
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def delete_topics(bootstrap: str, run_id: str) -> None:
    """Tansu keeps topics in memory: drop this run's so later runs do not pay for them."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        mine = [t for t in admin.list_topics() if run_id in t]
        if mine:
            admin.delete_topics(mine)
    finally:
        admin.close()


def _clean_env() -> dict[str, str]:
    """The caller's LEDGER_* settings must not reach the workers: each is configured by the benchmark."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}


# --------------------------------------------------------------------------------------------------------
# Contenders
# --------------------------------------------------------------------------------------------------------


def measure_ledger(stack: Stack, shared: TopicSettings, partitions: int, records: int, run_id: str, *,
                   fold: str, batch_events_max: int | None) -> Interval:
    """The ledger's processor (and relay) in a subprocess on its own database; fold "real" or "none"."""
    contender = "pipeline" if fold == "real" else "ceiling"
    with fresh_database(stack.server_dsn, f"bench_{contender}_{run_id}") as dsn, \
            tempfile.TemporaryDirectory(prefix=f"bench-{contender}-") as data_dir:
        config = {"bootstrap": stack.bootstrap, "dsn": dsn, "partitions": partitions, "data_dir": data_dir,
                  "topics": contender_topics(shared, contender).model_dump(), "fold": fold,
                  "consumer_group": f"bench-{contender}-{run_id}", "batch_events_max": batch_events_max}
        log_path = Path(data_dir) / "worker.log"
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen([sys.executable, "-m", "bench._ledger_worker", json.dumps(config)],
                                    cwd=REPO_ROOT, env=_clean_env(), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=log_file, text=True,
                                    preexec_fn=die_with_parent)
        try:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"{contender} worker did not start:\n{tail(log_path)}")
            with psycopg.connect(dsn, autocommit=True) as observer:
                def received() -> int:
                    row = observer.execute("SELECT coalesce(sum(applied + duplicates + dead_lettered), 0)"
                                           " FROM positions").fetchone()
                    return int(row[0]) if row else 0

                sources = {"processor": lambda: process_cpu_s(proc.pid),
                           **stack.sources([observer.info.backend_pid])}
                return watch(received, records, sources, timeout_s=120 + records / 200, interval_s=0.02,
                             alive=lambda: proc.poll() is None, what=contender)
        except Exception as exc:
            raise RuntimeError(f"{contender} failed: {exc}\n--- worker log ---\n{tail(log_path)}") from exc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    _log(f"{contender} worker did not stop in 60 s after SIGTERM; killing it")
                    proc.kill()
                    proc.wait(10)


def measure_faust(stack: Stack, shared: TopicSettings, partitions: int, rows: int, run_id: str) -> Interval:
    with fresh_database(stack.server_dsn, f"bench_faust_{run_id}") as dsn, \
            psycopg.connect(dsn, autocommit=True) as observer:
        return faust_baseline(stack.bootstrap, dsn, shared.inputs(), partitions, rows,
                              stack.sources([observer.info.backend_pid]), observer)


def measure_bare_copy(stack: Stack, shared: TopicSettings, partitions: int, records: int, run_id: str,
                      batch_events_max: int | None) -> Interval:
    with fresh_database(stack.server_dsn, f"bench_bare_{run_id}") as dsn:
        sources = {"processor": lambda: process_cpu_s(os.getpid()), **stack.sources([])}
        return bare_copy(stack.bootstrap, dsn, shared.inputs(), partitions, records, sources,
                         **({"copy_batch": batch_events_max} if batch_events_max else {}))


def run_once(stack: Stack, events: list[Event], partitions: int, contenders: tuple[str, ...],
             batch_events_max: int | None) -> dict[str, Interval]:
    """Load one set of topics, then measure each contender on it. The pipeline goes last: its relay
    posts the ledger's own payments back onto the payments input topic."""
    run_id = uuid.uuid4().hex[:8]
    shared = input_topics(run_id)
    ensure_topics(stack.bootstrap, Settings(kafka_bootstrap_servers=stack.bootstrap, topics=shared,
                                            partitions=partitions))
    started = time.perf_counter()
    with Publisher(stack.bootstrap, shared, partitions) as publisher:
        publisher.publish(events)
        publisher.flush()
    records = publisher.records_sent
    _log(f"loaded {records:,} records ({len(events):,} events) in {time.perf_counter() - started:.1f} s,"
         " before any clock")
    out: dict[str, Interval] = {}
    try:
        for contender in CONTENDERS:
            if contender not in contenders:
                continue
            if contender == "ceiling":
                out[contender] = measure_ledger(stack, shared, partitions, records, run_id, fold="none",
                                                batch_events_max=batch_events_max)
            elif contender == "bare_copy":
                out[contender] = measure_bare_copy(stack, shared, partitions, records, run_id, batch_events_max)
            elif contender == "faust_baseline":
                out[contender] = measure_faust(stack, shared, partitions, dedupe_keys(events, partitions), run_id)
            else:
                out[contender] = measure_ledger(stack, shared, partitions, records, run_id, fold="real",
                                                batch_events_max=batch_events_max)
            got = out[contender]
            _log(f"{contender}: {got.events_per_second:,.0f} events/s over {got.records:,} records; CPU us/event "
                 + ", ".join(f"{k} {v:.1f}" for k, v in got.cpu_us_per_event.items()))
    finally:
        delete_topics(stack.bootstrap, run_id)
    return out


# --------------------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------------------


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def _per_run(runs: list[dict[str, Interval]], a: str, b: str) -> list[float]:
    return [r[a].events_per_second / r[b].events_per_second for r in runs if a in r and b in r]


def summarize(runs: list[dict[str, Interval]], events: int, partitions: int) -> dict[str, Any]:
    def rate(name: str) -> float | None:
        return _median([r[name].events_per_second for r in runs if name in r])

    def cpu(name: str) -> dict[str, float | None]:
        return {p: _median([r[name].cpu_us_per_event[p] for r in runs if name in r]) for p in PROCESSES}

    per_process = {name: cpu(name) for name in CONTENDERS if any(name in r for r in runs)}
    ledger_cpu = _median([r["pipeline"].cpu_us_per_event["processor"] + r["pipeline"].cpu_us_per_event["postgres"]
                          for r in runs if "pipeline" in r])
    return {
        "pipeline_events_per_second": rate("pipeline"),
        "faust_baseline_events_per_second": rate("faust_baseline"),
        "ceiling_events_per_second": rate("ceiling"),
        "bare_copy_events_per_second": rate("bare_copy"),
        "ratio_vs_faust": _median(_per_run(runs, "pipeline", "faust_baseline")),
        "ratio_vs_ceiling": _median(_per_run(runs, "pipeline", "ceiling")),
        "ratio_vs_bare_copy": _median(_per_run(runs, "pipeline", "bare_copy")),
        "ledger_cpu_us_per_event": ledger_cpu,
        "cpu_us_per_event": per_process,
        "events": events,
        "partitions": partitions,
        "repeat": len(runs),
        "runs": [{name: interval.as_dict() for name, interval in r.items()} for r in runs],
    }


def run(events: int, repeat: int, partitions: int = DEFAULT_PARTITIONS, *, seed: int = 1,
        contenders: tuple[str, ...] = CONTENDERS, batch_events_max: int | None = None,
        stack: Stack | None = None) -> dict[str, Any]:
    """Median figures of ``repeat`` runs, on the given broker and server or on an embedded stack of its own."""
    load = LoadWatch()
    program = program_events(events, seed)
    runs: list[dict[str, Interval]] = []
    with contextlib.nullcontext(stack) if stack is not None else embedded_stack() as stack:
        _log(f"broker {stack.bootstrap} (pid {stack.broker_pid}), PostgreSQL pid {stack.postmaster_pid}")
        for i in range(repeat):
            _log(f"run {i + 1}/{repeat}")
            runs.append(run_once(stack, program, partitions, contenders, batch_events_max))
    return {**summarize(runs, len(program), partitions), **load.figures()}


def _print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    def num(value: float | None, fmt: str = ",.0f") -> str:
        return "n/a" if value is None else format(value, fmt)

    labels = {"pipeline": "pipeline", "ceiling": "honest ceiling", "faust_baseline": "Faust baseline",
              "bare_copy": "bare COPY (*)"}
    table = Table(title=f"Pre-loaded topics, {result['events']:,} events, {result['partitions']} partitions,"
                        f" median of {result['repeat']}")
    table.add_column("contender")
    table.add_column("events/s", justify="right")
    table.add_column("pipeline / it", justify="right")
    for p in PROCESSES:
        table.add_column(f"{p} us/ev", justify="right")
    ratio = {"ceiling": result["ratio_vs_ceiling"], "faust_baseline": result["ratio_vs_faust"],
             "bare_copy": result["ratio_vs_bare_copy"], "pipeline": None}
    for name in ("pipeline", "ceiling", "faust_baseline", "bare_copy"):
        if name not in result["cpu_us_per_event"]:
            continue
        cpu = result["cpu_us_per_event"][name]
        table.add_row(labels[name], num(result[f"{name}_events_per_second"]), num(ratio[name], ".2f"),
                      *(num(cpu[p], ".1f") for p in PROCESSES))
    Console().print(table)
    print("pipeline: the ledger (fold, projections, discrepancies, relay); honest ceiling: the same processor"
          " with a no-op fold;\nFaust baseline: one upsert and commit per event; (*) bare COPY, no keys/chain/"
          "positions: not a ceiling of the ledger's work.")
    print(f"ledger CPU (pipeline processor + PostgreSQL): {num(result['ledger_cpu_us_per_event'], '.1f')} us/event;"
          f" load average {result['load_average_start']} -> {result['load_average_end']} on {result['cpus']:.0f} CPUs")


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000, help="events of the program (default 100000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs; medians are reported (default 3)")
    parser.add_argument("--partitions", type=int, default=DEFAULT_PARTITIONS, help="partitions per topic")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", default=",".join(CONTENDERS),
                        help=f"contenders to measure, comma-separated (default {','.join(CONTENDERS)})")
    parser.add_argument("--batch-events", type=int, default=None,
                        help="records per batch of the ledger and the bare COPY (default: the ledger's setting)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(argv)
    contenders = tuple(c for c in args.only.split(",") if c)
    if not set(contenders) <= set(CONTENDERS):
        parser.error(f"--only: unknown contender in {args.only!r}; known: {', '.join(CONTENDERS)}")
    if args.events < 1 or args.repeat < 1 or args.partitions < 1:
        parser.error("--events, --repeat and --partitions must be positive")
    # SIGTERM/SIGHUP unwind like Ctrl-C, so the workers, the broker and PostgreSQL are always stopped.
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    result = run(args.events, args.repeat, args.partitions, seed=args.seed, contenders=contenders,
                 batch_events_max=args.batch_events)
    if args.json:
        print(json.dumps(result))
    else:
        _print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
