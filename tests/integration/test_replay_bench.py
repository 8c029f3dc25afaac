"""bench/replay.py runs end to end on a small archive and prints the keys it promises."""

from __future__ import annotations

from bench.replay import run
from processor.embedded import EmbeddedPostgres

KEYS = {"replay_events_per_second", "ceiling_events_per_second", "ratio_vs_ceiling", "statement_p95_ms"}


def test_replay_bench_reports_its_ratios_on_a_small_archive(pg_server: EmbeddedPostgres) -> None:
    result = run(3000, samples=20, database_url=pg_server.dsn)
    assert KEYS <= set(result)
    assert result["events"] >= 2000 and result["rejected"] == 0
    assert result["replay_events_per_second"] > 0 and result["ceiling_events_per_second"] > 0
    assert 0 < result["ratio_vs_ceiling"] and result["statement_p95_ms"] > 0
