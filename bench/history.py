"""Processor memory as the ledger grows: RSS of `benefits-ledger up` at 10k, 100k and 1M accounts.

    python -m bench.history [--accounts 10000,100000,1000000] [--json]

Starts its own embedded broker and PostgreSQL (in a temporary directory), runs `benefits-ledger up` as
a subprocess against them with the settings of the environment (the defaults unless LEDGER_* variables
say otherwise: account_cache_bytes_max, key_partition_cache_max, see the README's "Memory"), and
publishes accounts in stages: each account gets an enrollment, a bill
and a payment for one month. After each stage has been applied, it reports the processor process's
resident set size then and the peak seen while the stage was applied (sampled every 0.2 s).

With --json the last line is one JSON object: processor_rss_mb (keyed by accounts, e.g. "1000000"),
processor_peak_rss_mb (same keys), events, seconds, and the cache settings. A benchmark, never a
timed test: the figures depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from events.publisher import Publisher  # noqa: E402
from events.types import EnrollmentChanged, Event, PaymentReceived, PremiumBilled, RatePublished  # noqa: E402
from processor.app import ensure_database  # noqa: E402
from processor.embedded import EmbeddedBroker, EmbeddedPostgres  # noqa: E402
from processor.settings import Settings  # noqa: E402
from projections.postgres import PostgresStore  # noqa: E402

JAN = date(2026, 1, 1)
T0 = datetime(2026, 1, 2, 9, 0, tzinfo=UTC)


def _log(message: str) -> None:
    print(f"[bench.history] {message}", file=sys.stderr, flush=True)


def account_events(i: int) -> list[Event]:
    account = f"H{i:08d}"
    return [
        EnrollmentChanged(event_id=f"{account}-enr", account_id=account, effective_on=JAN, occurred_at=T0,
                          source="bench", member_id=account, plan="UMP", coverage_line="health", tier="EMP",
                          action="add", benefit_begin=JAN, agency_id=f"AG-{i % 50:03d}"),
        PremiumBilled(event_id=f"{account}-bill", account_id=account, effective_on=JAN, occurred_at=T0,
                      source="bench", bill_id=f"B-{account}", coverage_month=JAN, plan="UMP", tier="EMP",
                      amount_cents=78_412, due_on=date(2026, 1, 31), agency_id=f"AG-{i % 50:03d}"),
        PaymentReceived(event_id=f"{account}-pay", account_id=account, effective_on=date(2026, 1, 5),
                        occurred_at=T0, source="bench", payment_id=f"P-{account}", coverage_month=JAN,
                        amount_cents=78_412, method="payroll", payer_id=f"AG-{i % 50:03d}"),
    ]


@contextlib.contextmanager
def stack(workdir: Path) -> Iterator[tuple[str, str]]:
    with EmbeddedBroker() as broker, EmbeddedPostgres(workdir / "postgres") as pg:
        yield broker.bootstrap, ensure_database(pg.dsn, "bench_history")


def measure(checkpoints: list[int], workdir: Path) -> dict[str, object]:
    settings = Settings()
    with stack(workdir) as (bootstrap, dsn):
        env = dict(os.environ)  # LEDGER_* settings of the caller (cache bounds, say) apply to `up` too
        env.update({"PYTHONPATH": str(REPO_ROOT), "LEDGER_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                    "LEDGER_DATABASE_URL": dsn, "LEDGER_DATA_DIR": str(workdir)})
        log = (workdir / "up.log").open("wb")
        up = subprocess.Popen([sys.executable, "-m", "processor.cli", "up"], env=env, cwd=workdir,
                              stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        store: PostgresStore | None = None
        try:
            proc = psutil.Process(up.pid)
            while "partitions assigned" not in (workdir / "up.log").read_text(errors="replace"):
                if up.poll() is not None:
                    raise RuntimeError(f"`up` exited with {up.returncode}: see {workdir / 'up.log'}")
                time.sleep(0.2)
            store = PostgresStore(dsn)
            rss: dict[str, float] = {}
            peak: dict[str, float] = {}
            published = 0
            started = time.monotonic()
            with Publisher(bootstrap, settings.topics, settings.partitions) as pub:
                published += pub.publish([RatePublished(
                    event_id="bench-rate", account_id="*", effective_on=JAN, occurred_at=T0, source="bench",
                    rate_id="R-UMP-EMP", plan="UMP", tier="EMP", month_from=JAN, total_cents=78_412,
                    employee_cents=11_762, employer_cents=66_650)])
                done = 0
                for target in checkpoints:
                    for first in range(done, target, 10_000):
                        published += pub.publish(
                            [e for i in range(first, min(target, first + 10_000)) for e in account_events(i)])
                    pub.flush()
                    done = target
                    most = 0.0
                    while store.counts().received < published:
                        if up.poll() is not None:
                            raise RuntimeError(f"`up` exited with {up.returncode}: see {workdir / 'up.log'}")
                        most = max(most, proc.memory_info().rss / 2**20)
                        time.sleep(0.2)
                    rss[str(target)] = round(proc.memory_info().rss / 2**20, 1)
                    peak[str(target)] = round(max(most, rss[str(target)]), 1)
                    _log(f"{target:,} accounts ({published:,} records): RSS {rss[str(target)]} MB,"
                         f" peak {peak[str(target)]} MB, {time.monotonic() - started:.0f} s")
            return {
                "processor_rss_mb": rss, "processor_peak_rss_mb": peak, "events": published,
                "seconds": round(time.monotonic() - started, 1),
                "account_cache_bytes_max": settings.account_cache_bytes_max,
                "account_cache_max": settings.account_cache_max,
                "key_partition_cache_max": settings.key_partition_cache_max,
                "batch_events_max": settings.batch_events_max,
            }
        finally:
            if store is not None:
                store.close()
            up.terminate()
            try:
                up.wait(30)
            except subprocess.TimeoutExpired:
                up.kill()
                up.wait(10)
            log.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--accounts", default="10000,100000,1000000",
                        help="cumulative account counts to report at (comma-separated)")
    parser.add_argument("--json", action="store_true", help="one JSON object as the last line")
    args = parser.parse_args(argv)
    checkpoints = sorted({int(n) for n in args.accounts.split(",")})
    with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp:
        result = measure(checkpoints, Path(tmp))
    if args.json:
        print(json.dumps(result))
    else:
        for n, mb in result["processor_rss_mb"].items():  # type: ignore[union-attr]
            print(f"{int(n):>10,} accounts: processor RSS {mb} MB (peak {result['processor_peak_rss_mb'][n]} MB)")  # type: ignore[index]
    return 0


if __name__ == "__main__":
    sys.exit(main())
