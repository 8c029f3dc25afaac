"""Cost as history grows: fold and write cost per event and snapshot bytes at 12, 48 and 84 months of
history, and the processor's resident memory at 10k, 100k and 1M cached accounts.

    python bench/history.py [--members 1000] [--months 12,48,84] [--repeat 3] [--cold-cache-mib 40]
                            [--compare-gc] [--accounts 10000,100000,1000000] [--skip-history | --skip-rss]
                            [--json]

**Fold and write.** The demo program (``processor.entrypoints.demo.generate``: billing, payments,
remittances, hires, terminations, tier and retroactive changes, COBRA, FSA, business-day and billing-cycle
closes) is generated for ``max(--months) + --repeat`` months and folded month by month, in batches of
``batch_events_max`` records as the processor takes them, through ``BatchProcessor.process`` on a
PostgreSQL store (an embedded server of this run; ``--memory`` uses the in-memory store and skips the
write). After N months of history, each of the next ``--repeat`` months is measured and the median
reported:
- ``fold_us_per_event``: CPU of ``BatchProcessor.process`` per record (decode, dedupe, fold, detection,
  collecting the rows, and ``BatchWrite.freeze`` encoding the snapshots);
- ``freeze_us_per_event``: the ``BatchWrite.freeze`` part of it (encoded once more, apart, to time it);
- ``write_us_per_event``: CPU of ``commit_batch`` per record, this process plus the PostgreSQL server;
- ``fold_server_us_per_event``: the server's CPU while ``process`` runs, per record: the fold's own
  queries (the dedupe lookup, loading accounts, the candidates of business days and billing cycles),
  which neither figure above counts;
- ``snapshot_bytes``: mean bytes of fold state ``BatchWrite.freeze`` encodes per account written in that
  month: the account's header and the month rows it changed (processor/state.py, projections/model.py);
- ``accounts_written_per_event``: accounts a batch writes, per record (the write's cost is per account).

The cache is the processor's default (``LEDGER_ACCOUNT_CACHE_BYTES_MAX``) and full garbage collections run
on the processor's timer (processor/collector.py), as in ``benefits-ledger up``. The program is then folded
again with a ``--cold-cache-mib`` cache (default 40 MiB), which holds fewer accounts the longer their
history, so most events load their account: ``cold_fold_us_per_event`` (and ``cold_cached_accounts``, the
accounts it held). ``--compare-gc`` folds it a third time with CPython's own full collections
(``cold_cpython_gc_fold_us_per_event``), the baseline of the timer.

**Memory.** For each of ``--accounts`` a fresh topic set and database are loaded with that many accounts
(an enrollment, a bill and a payment each; ``--account-months`` bills and pays more months), then a fresh
``benefits-ledger up --role processor`` process (the deployed processor, default settings) applies them;
``processor_rss_mb`` is its resident set once everything is applied, ``processor_peak_rss_mb`` the most
seen while applying (sampled every 0.5 s). The 1M size takes a while: ``seconds`` says how long each took.

With --json the last line is one JSON object: fold_us_per_event, freeze_us_per_event, write_us_per_event,
fold_server_us_per_event, snapshot_bytes, cold_fold_us_per_event (each keyed by months of history, "12",
"48", "84"), processor_rss_mb and processor_peak_rss_mb (keyed by accounts, "10000", "100000", "1000000"),
seconds, and the settings used.
A benchmark, never a timed test: the figures depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import psutil  # noqa: E402
import psycopg  # noqa: E402

from bench._measure import LoadWatch, postgres_cpu_s  # noqa: E402
from events import codec  # noqa: E402
from events.publisher import Publisher  # noqa: E402
from events.topics import TopicSettings, topic_for  # noqa: E402
from events.types import EnrollmentChanged, Event, PaymentReceived, PremiumBilled, RatePublished  # noqa: E402
from processor.app import ensure_database  # noqa: E402
from processor.batch import BatchProcessor, Record, partition_for  # noqa: E402
from processor.collector import FullCollections  # noqa: E402
from processor.embedded import EmbeddedBroker, EmbeddedPostgres  # noqa: E402
from processor.settings import PlanSettings, Settings  # noqa: E402
from projections.memory import MemoryStore  # noqa: E402
from projections.model import LedgerStore  # noqa: E402

PARTITIONS = 4
NOW = datetime(2034, 1, 1, tzinfo=UTC)
MB = 2**20


def _log(message: str) -> None:
    print(f"[bench.history] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------------
# Fold and write cost against months of history
# --------------------------------------------------------------------------------------------------------


def month_records(members: int, months: int, seed: int) -> list[list[Record]]:
    """The demo program's records, one list per month (phases are named "YYYY-MM ..."), with the
    offsets a broker would give them; broadcast events are one record per partition."""
    from processor.entrypoints.demo import generate

    program = generate(members=members, months=months, seed=seed)
    topics = TopicSettings()
    offsets: dict[tuple[str, int], int] = {}
    by_month: dict[str, list[Record]] = {}
    order: list[str] = []

    def add(month: str, topic: str, partition: int, key: bytes | None, value: bytes) -> None:
        offset = offsets.get((topic, partition), 0)
        offsets[(topic, partition)] = offset + 1
        if month not in by_month:
            by_month[month] = []
            order.append(month)
        by_month[month].append(Record(topic=topic, partition=partition, offset=offset, key=key, value=value))

    for name, events in program.phases:
        month = name[:7] if name[:4].isdigit() else order[-1]  # the final day close ends the last month
        for e in events:
            body = codec.encode(e)
            if type(e).BROADCAST:
                for p in range(PARTITIONS):
                    add(month, topic_for(e, topics), p, None, body)
            else:
                key = e.account_id.encode()
                add(month, topic_for(e, topics), partition_for(key, PARTITIONS), key, body)
    return [by_month[m] for m in order]


@contextlib.contextmanager
def history_store(memory: bool, workdir: Path) -> Iterator[tuple[LedgerStore, int | None]]:
    """(store, postmaster pid): an embedded PostgreSQL of this run, or the in-memory store."""
    if memory:
        yield MemoryStore(), None
        return
    from projections.postgres import PostgresStore

    with EmbeddedPostgres(workdir / "history-pg") as server:
        store = PostgresStore(ensure_database(server.dsn, "bench_history", reset=True))  # each run from nothing
        try:
            store.migrate()
            yield store, server.pid
        finally:
            store.close()


def fold_costs(members: int, checkpoints: list[int], repeat: int, seed: int, batch: int, memory: bool,
               workdir: Path, *, cache_bytes_max: int, gc_interval_seconds: int,
               per_month: list[list[Record]] | None = None) -> dict[str, Any]:
    """Fold the program month by month as the processor does: the cache bounded by ``cache_bytes_max``
    and full garbage collections on the processor's timer (processor/collector.py; 0: CPython's own)."""
    months = max(checkpoints) + repeat
    started = time.monotonic()
    if per_month is None:
        per_month = month_records(members, months, seed)
    _log(f"program: {members:,} members, {months} months, {sum(map(len, per_month)):,} records"
         f" ({time.monotonic() - started:.0f} s); cache {cache_bytes_max / 2**20:,.0f} MiB, full collections"
         + (f" every {gc_interval_seconds} s" if gc_interval_seconds else " by CPython's count"))
    measured = {m for n in checkpoints for m in range(n, n + repeat)}
    figures: dict[int, dict[str, float]] = {}
    collections = FullCollections(gc_interval_seconds)
    collections.start()
    with contextlib.ExitStack() as stack:
        stack.callback(collections.stop)
        store, postmaster = stack.enter_context(history_store(memory, workdir))
        proc = BatchProcessor(store, log_id="bench", plan=PlanSettings(), topics=TopicSettings(),
                              partitions=PARTITIONS, clock=lambda: NOW, account_cache_bytes_max=cache_bytes_max)
        for month, records in enumerate(per_month):
            fold_s = freeze_s = write_s = fold_server_s = 0.0
            sizes: list[int] = []
            for i in range(0, len(records), batch):
                before = postgres_cpu_s(postmaster) if postmaster else 0.0
                t0 = time.process_time()
                result = proc.process(records[i:i + batch])
                t1 = time.process_time()
                fold_server_s += (postgres_cpu_s(postmaster) - before) if postmaster else 0.0
                if month in measured:
                    write = result.write
                    frozen = write.frozen
                    write.frozen = None
                    t2 = time.process_time()
                    write.freeze()  # the same encoding once more, timed apart (process() did it once)
                    freeze_s += time.process_time() - t2
                    write.frozen = frozen
                    assert frozen is not None
                    written: dict[str, int] = {a: len(header) for a, _, header in frozen.snapshots}
                    for a, _, _, state, findings in frozen.month_states:
                        written[a] = written.get(a, 0) + len(state) + len(findings or b"")
                    sizes.extend(written.values())
                server0 = postgres_cpu_s(postmaster) if postmaster else 0.0
                t3 = time.process_time()
                store.commit_batch(result.write)
                write_s += time.process_time() - t3 + ((postgres_cpu_s(postmaster) - server0) if postmaster else 0.0)
                proc.committed(result)
                fold_s += t1 - t0
                t4 = time.process_time()
                collections.tick()  # as the processor's loop does after each batch
                fold_s += time.process_time() - t4
            if month in measured:
                n = len(records)
                figures[month] = {"fold": fold_s / n * 1e6, "freeze": freeze_s / n * 1e6,
                                  "write": write_s / n * 1e6, "fold_server": fold_server_s / n * 1e6,
                                  "bytes": statistics.fmean(sizes) if sizes else 0.0,
                                  "records": n, "cached": len(proc._accounts), "written": len(sizes) / n}
                _log(f"month {month + 1} after {month} months of history: {n:,} records, fold"
                     f" {figures[month]['fold']:.1f} us/event (freeze {figures[month]['freeze']:.1f}, its queries'"
                     f" server CPU {figures[month]['fold_server']:.1f}), write {figures[month]['write']:.1f}"
                     f" us/event, snapshot {figures[month]['bytes']:,.0f} bytes")

    def median(n: int, key: str, digits: int = 2) -> float:
        return round(statistics.median(figures[m][key] for m in range(n, n + repeat)), digits)

    keys = [str(n) for n in checkpoints]
    return {
        "fold_us_per_event": dict(zip(keys, (median(n, "fold") for n in checkpoints), strict=True)),
        "freeze_us_per_event": dict(zip(keys, (median(n, "freeze") for n in checkpoints), strict=True)),
        "fold_server_us_per_event": None if memory else dict(
            zip(keys, (median(n, "fold_server") for n in checkpoints), strict=True)),
        "write_us_per_event": None if memory else dict(zip(keys, (median(n, "write") for n in checkpoints),
                                                           strict=True)),
        "snapshot_bytes": dict(zip(keys, (round(median(n, "bytes", 0)) for n in checkpoints), strict=True)),
        "records_per_month": dict(zip(keys, (int(median(n, "records", 0)) for n in checkpoints), strict=True)),
        "cached_accounts": dict(zip(keys, (int(median(n, "cached", 0)) for n in checkpoints), strict=True)),
        # accounts written (header and changed rows) per record: the write's cost is per account written
        "accounts_written_per_event": dict(zip(keys, (median(n, "written", 3) for n in checkpoints), strict=True)),
        "history_members": members,
        "history_seconds": round(time.monotonic() - started, 1),
    }


# --------------------------------------------------------------------------------------------------------
# Processor memory against cached accounts
# --------------------------------------------------------------------------------------------------------

JAN = date(2026, 1, 1)
T0 = datetime(2026, 1, 2, 9, 0, tzinfo=UTC)


def account_events(i: int, months: int) -> list[Event]:
    """One account: an enrollment, then a bill and a payment per month."""
    account = f"H{i:08d}"
    agency = f"AG-{i % 50:03d}"
    out: list[Event] = [EnrollmentChanged(
        event_id=f"{account}-enr", account_id=account, effective_on=JAN, occurred_at=T0, source="bench",
        member_id=account, plan="UMP", coverage_line="health", tier="EMP", action="add", benefit_begin=JAN,
        agency_id=agency)]
    for m in range(months):
        month = date(2026 + m // 12, m % 12 + 1, 1)
        out.append(PremiumBilled(
            event_id=f"{account}-bill-{m}", account_id=account, effective_on=month, occurred_at=T0, source="bench",
            bill_id=f"B-{account}-{m}", coverage_month=month, plan="UMP", tier="EMP", amount_cents=78_412,
            due_on=month + timedelta(days=27), agency_id=agency))
        out.append(PaymentReceived(
            event_id=f"{account}-pay-{m}", account_id=account, effective_on=month + timedelta(days=4),
            occurred_at=T0, source="bench", payment_id=f"P-{account}-{m}", coverage_month=month,
            amount_cents=78_412, method="payroll", payer_id=agency))
    return out


def _topics(suffix: str) -> TopicSettings:
    names = TopicSettings()
    return TopicSettings(**{f: f"{getattr(names, f)}.{suffix}" for f in TopicSettings.model_fields})


def _env(bootstrap: str, dsn: str, data_dir: Path, topics: TopicSettings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env.update({"PYTHONPATH": str(REPO_ROOT), "LEDGER_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "LEDGER_DATABASE_URL": dsn, "LEDGER_DATA_DIR": str(data_dir),
                "LEDGER_ANCHOR_HMAC_KEY": secrets.token_hex(32), "LEDGER_PARTITIONS": str(PARTITIONS)})
    env.update({f"LEDGER_TOPICS__{f.upper()}": getattr(topics, f) for f in TopicSettings.model_fields})
    return env


def _received(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT coalesce(sum(applied + duplicates + dead_lettered), 0) FROM positions").fetchone()
    return int(row[0]) if row else 0


def rss_at(accounts: int, account_months: int, bootstrap: str, server_dsn: str, workdir: Path) -> dict[str, float]:
    """Load ``accounts`` accounts onto fresh topics, then apply them with a fresh processor process."""
    suffix = uuid.uuid4().hex[:8]
    topics = _topics(suffix)
    dsn = ensure_database(server_dsn, f"bench_rss_{suffix}")
    settings = Settings(kafka_bootstrap_servers=bootstrap, topics=topics, partitions=PARTITIONS)
    started = time.monotonic()
    from processor.topics import ensure_topics

    ensure_topics(bootstrap, settings)
    with Publisher(bootstrap, topics, PARTITIONS) as pub:
        pub.publish([RatePublished(
            event_id="bench-rate", account_id="*", effective_on=JAN, occurred_at=T0, source="bench",
            rate_id="R-UMP-EMP", plan="UMP", tier="EMP", month_from=JAN, total_cents=78_412,
            employee_cents=11_762, employer_cents=66_650)])
        for first in range(0, accounts, 10_000):
            chunk = range(first, min(accounts, first + 10_000))
            pub.publish([e for i in chunk for e in account_events(i, account_months)])
        pub.flush()
    records = pub.records_sent
    loaded = time.monotonic() - started
    _log(f"{accounts:,} accounts: {records:,} records loaded in {loaded:.0f} s; starting the processor")
    data_dir = workdir / f"rss-{suffix}"
    data_dir.mkdir()
    log_path = data_dir / "up.log"
    with log_path.open("wb") as log:
        up = subprocess.Popen([sys.executable, "-m", "processor.cli", "up", "--role", "processor"],
                              env=_env(bootstrap, dsn, data_dir, topics), cwd=data_dir, stdin=subprocess.DEVNULL,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        proc = psutil.Process(up.pid)
        peak = 0.0
        with psycopg.connect(dsn, autocommit=True) as observer:
            while True:
                if up.poll() is not None:
                    log_tail = log_path.read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"`up` exited with {up.returncode}:\n{log_tail}")
                peak = max(peak, proc.memory_info().rss / MB)
                with contextlib.suppress(psycopg.errors.UndefinedTable):  # before `up` has migrated
                    if _received(observer) >= records:
                        break
                time.sleep(0.5)
        rss = proc.memory_info().rss / MB
        applied = time.monotonic() - started - loaded
        _log(f"{accounts:,} accounts applied in {applied:.0f} s: RSS {rss:,.0f} MB, peak {max(peak, rss):,.0f} MB")
        return {"rss": round(rss, 1), "peak": round(max(peak, rss), 1), "seconds": round(loaded + applied, 1),
                "records": records}
    finally:
        up.terminate()
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait(10)
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "bench_rss_{suffix}" WITH (FORCE)')
        _delete_topics(bootstrap, suffix)


def _delete_topics(bootstrap: str, suffix: str) -> None:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        mine = [t for t in admin.list_topics() if t.endswith(suffix)]
        if mine:
            admin.delete_topics(mine)
    finally:
        admin.close()


def processor_rss(sizes: list[int], account_months: int, workdir: Path) -> dict[str, Any]:
    settings = Settings()
    out: dict[str, dict[str, float]] = {}
    with EmbeddedBroker() as broker, EmbeddedPostgres(workdir / "rss-pg") as server:
        for n in sizes:
            out[str(n)] = rss_at(n, account_months, broker.bootstrap, server.dsn, workdir)
    cache = {name: getattr(settings, name) for name in ("account_cache_max", "account_cache_bytes_max",
                                                         "key_partition_cache_max", "batch_events_max")
             if hasattr(settings, name)}
    return {
        "processor_rss_mb": {k: v["rss"] for k, v in out.items()},
        "processor_peak_rss_mb": {k: v["peak"] for k, v in out.items()},
        "rss_seconds": {k: v["seconds"] for k, v in out.items()},
        "rss_records": {k: int(v["records"]) for k, v in out.items()},
        "account_months": account_months,
        "settings": cache,
    }


# --------------------------------------------------------------------------------------------------------


def _sizes(text: str) -> list[int]:
    values = sorted({int(v) for v in text.split(",") if v.strip()})
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"expected positive numbers separated by commas, not {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--members", type=int, default=1000, help="members of the history program (default 1000)")
    parser.add_argument("--months", type=_sizes, default=[12, 48, 84], help="months of history (default 12,48,84)")
    parser.add_argument("--repeat", type=int, default=3, help="months measured after each; median (default 3)")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--memory", action="store_true", help="fold on the in-memory store; no write figures")
    parser.add_argument("--accounts", type=_sizes, default=[10_000, 100_000, 1_000_000],
                        help="cached accounts to measure the processor's RSS at (default 10000,100000,1000000)")
    parser.add_argument("--account-months", type=int, default=1, help="months billed and paid per account (default 1)")
    parser.add_argument("--cold-cache-mib", type=int, default=40,
                        help="fold again with an account cache of this many MiB, which holds only part of the"
                        " accounts as history grows: the cost of loading evicted accounts (default 40; 0 skips)")
    parser.add_argument("--compare-gc", action="store_true",
                        help="and once more with CPython's own full collections instead of the processor's timer")
    parser.add_argument("--skip-history", action="store_true", help="only the memory figures")
    parser.add_argument("--skip-rss", action="store_true", help="only the fold and write figures")
    parser.add_argument("--json", action="store_true", help="one JSON object as the last line")
    args = parser.parse_args(argv)
    if args.members < 1 or args.repeat < 1 or args.account_months < 1:
        parser.error("--members, --repeat and --account-months must be positive")
    result: dict[str, Any] = {}
    load = LoadWatch()
    workdir = Path(tempfile.mkdtemp(prefix="bench-history-"))
    try:
        if not args.skip_history:
            settings = Settings()
            per_month = month_records(args.members, max(args.months) + args.repeat, args.seed)

            def costs(cache_bytes_max: int, gc_interval_seconds: int) -> dict[str, Any]:
                return fold_costs(args.members, args.months, args.repeat, args.seed, settings.batch_events_max,
                                  args.memory, workdir, cache_bytes_max=cache_bytes_max,
                                  gc_interval_seconds=gc_interval_seconds, per_month=per_month)

            result.update(costs(settings.account_cache_bytes_max, settings.gc_full_collect_interval_seconds))
            if args.cold_cache_mib:
                cold = costs(args.cold_cache_mib * 2**20, settings.gc_full_collect_interval_seconds)
                result["cold_cache_mib"] = args.cold_cache_mib
                result["cold_fold_us_per_event"] = cold["fold_us_per_event"]
                result["cold_cached_accounts"] = cold["cached_accounts"]
                if args.compare_gc:
                    cpython = costs(args.cold_cache_mib * 2**20, 0)
                    result["cold_cpython_gc_fold_us_per_event"] = cpython["fold_us_per_event"]
        if not args.skip_rss:
            result.update(processor_rss(args.accounts, args.account_months, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result.update(load.figures())
    if args.json:
        print(json.dumps(result))
        return 0
    if "fold_us_per_event" in result:
        for k, fold in result["fold_us_per_event"].items():
            write = result["write_us_per_event"][k] if result["write_us_per_event"] else None
            server = result["fold_server_us_per_event"][k] if result["fold_server_us_per_event"] else None
            freeze = result["freeze_us_per_event"][k]
            print(f"{k:>3} months of history: fold {fold:6.1f} us/event (freeze {freeze:.1f}),"
                  f" its queries' server CPU {'n/a' if server is None else f'{server:.1f}'} us/event,"
                  f" write {'n/a' if write is None else f'{write:.1f}'} us/event,"
                  f" snapshot {result['snapshot_bytes'][k]:,} bytes")
    if "cold_fold_us_per_event" in result:
        for k, fold in result["cold_fold_us_per_event"].items():
            cpython = result.get("cold_cpython_gc_fold_us_per_event", {}).get(k)
            print(f"{k:>3} months of history, {result['cold_cache_mib']} MiB cache"
                  f" ({result['cold_cached_accounts'][k]:,} accounts cached): fold {fold:6.1f} us/event"
                  + (f" ({cpython:.1f} with CPython's full collections)" if cpython is not None else ""))
    if "processor_rss_mb" in result:
        for k, mb in result["processor_rss_mb"].items():
            print(f"{int(k):>10,} accounts: processor RSS {mb:,.0f} MB (peak {result['processor_peak_rss_mb'][k]:,.0f}"
                  f" MB), {result['rss_seconds'][k]:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
