"""bench/replay.py runs end to end on a small archive and prints the keys it promises."""

from __future__ import annotations

from bench.replay import run
from processor.embedded import EmbeddedPostgres

KEYS = {"replay_events_per_second", "ceiling_events_per_second", "ratio_vs_ceiling", "statement_p95_ms",
        "peak_rss_mb"}


def test_replay_bench_reports_n_processes_against_an_n_process_ceiling_on_a_small_archive(
    pg_server: EmbeddedPostgres,
) -> None:
    result = run(3000, samples=20, database_url=pg_server.dsn, workers=2, repeat=1)
    assert KEYS <= set(result)
    assert result["events"] >= 2000 and result["rejected"] == 0 and result["workers"] == 2
    assert result["replay_events_per_second"] > 0 and result["ceiling_events_per_second"] > 0
    assert 0 < result["ratio_vs_ceiling"] and result["statement_p95_ms"] > 0
    assert set(result["by_workers"]) == {"1", "2"}
    for figures in result["by_workers"].values():
        # the replaying processes were sampled: a spawned Python interpreter holds more than 10 MB
        assert figures["peak_rss_mb"] > 10 and figures["ceiling_peak_rss_mb"] > 10
    assert result["by_workers"]["2"]["peak_rss_mb"] == result["peak_rss_mb"]
    # CPU is charged to the workers that did the work (reaped children) and to the local PostgreSQL
    for key in ("replay_cpu_us_per_event", "ceiling_cpu_us_per_event"):
        assert result[key]["workers"] > 0 and result[key]["postgres"] > 0, key
    assert result["cpu_ratio_vs_ceiling"] > 0
