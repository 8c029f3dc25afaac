"""bench/throughput.py runs every contender end to end on a tiny program and prints the keys it promises.

A smoke test, never a timed assertion: the figures depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import pytest

from bench.throughput import Stack, run
from processor.embedded import EmbeddedBroker, EmbeddedPostgres

KEYS = {"pipeline_events_per_second", "faust_baseline_events_per_second", "ceiling_events_per_second",
        "bare_copy_events_per_second", "ratio_vs_faust", "ratio_vs_ceiling", "ledger_cpu_us_per_event",
        "cpu_us_per_event"}


def test_throughput_bench_measures_every_contender_with_cpu_per_process_on_a_tiny_program(
    broker: EmbeddedBroker, pg_server: EmbeddedPostgres,
) -> None:
    assert broker.pid is not None and pg_server.pid is not None
    stack = Stack(broker.bootstrap, pg_server.dsn, broker.pid, pg_server.pid)
    result = run(3000, 1, seed=5, batch_events_max=300, stack=stack)
    assert KEYS <= set(result)
    for name in ("pipeline", "ceiling", "faust_baseline", "bare_copy"):
        assert result[f"{name}_events_per_second"] > 0
        cpu = result["cpu_us_per_event"][name]
        assert set(cpu) == {"processor", "postgres", "broker"}
        assert cpu["processor"] > 0  # each did its own work, in its own process
        # The server's share of bare COPY here is a few milliseconds, under the kernel's 10 ms CPU tick,
        # so it can honestly read 0; the three ledgers' server work is several ticks.
        assert cpu["postgres"] >= 0 if name == "bare_copy" else cpu["postgres"] > 0
    pipeline = result["cpu_us_per_event"]["pipeline"]
    assert result["ledger_cpu_us_per_event"] == pytest.approx(pipeline["processor"] + pipeline["postgres"], abs=0.002)
    [only] = result["runs"]
    assert only["pipeline"]["records"] > 0 and result["ratio_vs_ceiling"] > 0 and result["ratio_vs_faust"] > 0
