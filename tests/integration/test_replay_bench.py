"""bench/replay.py runs end to end on a small archive and prints the keys it promises."""

from __future__ import annotations

from bench.replay import run
from processor.embedded import EmbeddedPostgres

KEYS = {"replay_events_per_second", "ceiling_events_per_second", "ratio_vs_ceiling", "statement_p95_ms",
        "peak_rss_mb"}


def test_replay_bench_reports_n_processes_against_an_n_process_ceiling_on_a_small_archive(
    pg_server: EmbeddedPostgres,
) -> None:
    # large enough that the ceiling's COPY costs the server some clock ticks (10 ms each): 3,000 events
    # sometimes measured 0.0
    result = run(20_000, samples=20, database_url=pg_server.dsn, workers=2, repeat=1)
    assert KEYS <= set(result)
    assert result["events"] >= 15_000 and result["rejected"] == 0 and result["workers"] == 2
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


def test_replay_bench_builds_a_program_in_parts_as_one_archive_in_business_order_with_an_unbroken_chain(
    pg_dsn: str,
) -> None:
    """Three parts of 26-27 members: every account event once, each broadcast once per partition, the rows
    phase after phase (each phase: every part's events, in part order), the chain and heads as the
    processor leaves them, and a strict replay that applies every event."""
    import psycopg

    from bench.replay import _program_parts, build_archive
    from events.types import BROADCAST_ACCOUNT
    from processor.settings import PlanSettings
    from projections.postgres import PostgresStore
    from replay.archive import connect
    from replay.parallel import Discard
    from replay.stream import stream_archive

    store = PostgresStore(pg_dsn)
    store.migrate()
    archive = build_archive(pg_dsn, 3000, 4, 7, members_per_part=30)
    assert (archive.parts, archive.members) == (3, 79)
    # where each event belongs: (phase, part) of the parts generated again (deterministic)
    place: dict[str, tuple[int, int]] = {}
    broadcasts = 0
    for k, _size, program in _program_parts(79, 7, 30):
        for i, (_name, phase) in enumerate(program.phases):
            for e in phase:
                if e.account_id != BROADCAST_ACCOUNT:
                    assert e.event_id not in place
                    place[e.event_id] = (i, k)
                elif k == 0:
                    broadcasts += 1
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute("SELECT event_id, account_id, partition FROM archive ORDER BY seq").fetchall()
        positions = conn.execute('SELECT topic, partition, "offset" FROM archive ORDER BY seq').fetchall()
    assert len(rows) == archive.rows == len(place) + 4 * broadcasts
    account_rows = [(place[e], e) for e, a, _p in rows if a != BROADCAST_ACCOUNT]
    assert sorted(e for _, e in account_rows) == sorted(place)  # each account event exactly once
    assert [where for where, _ in account_rows] == sorted(where for where, _ in account_rows)  # business order
    assert {p: sum(1 for _e, a, q in rows if a == BROADCAST_ACCOUNT and q == p) for p in range(4)} == {
        p: broadcasts for p in range(4)}
    subscribers = {a for _e, a, _p in rows if len(a) == 9 and a[0] == "M" and a[1:].isdigit()}
    assert len(subscribers) == 79 and len({a[3:] for a in subscribers}) == 79  # members numbered across parts
    assert archive.accounts == len({a for _e, a, _p in rows if a != BROADCAST_ACCOUNT})
    logs: dict[tuple[str, int], list[int]] = {}
    for topic, partition, offset in positions:
        logs.setdefault((topic, partition), []).append(offset)
    assert all(offsets == list(range(len(offsets))) for offsets in logs.values())  # each log's offsets, in order
    chain = store.verify_archive()
    store.close()
    assert chain.intact and chain.events_checked == archive.rows and chain.partitions == 4
    with connect(pg_dsn) as conn:
        totals = stream_archive(conn, PlanSettings(), Discard(), strict=True)
        conn.rollback()
    assert totals.events_replayed == archive.rows and not totals.rejections


def test_replay_bench_measures_only_n_processes_and_no_statements_when_asked_and_reports_its_own_peak(
    pg_server: EmbeddedPostgres,
) -> None:
    result = run(3000, samples=0, database_url=pg_server.dsn, workers=2, repeat=1, single=False,
                 members_per_part=30)
    assert set(result["by_workers"]) == {"2"} and result["parts"] == 3 and result["rejected"] == 0
    assert result["statement_samples"] == 0
    # the builder's peak, and the whole run's: a Python process holding the ledger is more than 30 MB
    assert 30 < result["build_peak_rss_mb"] <= result["bench_peak_rss_mb"]
    assert 10 < result["peak_rss_each_mb"] <= result["peak_rss_mb"]
