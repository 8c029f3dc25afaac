"""bench/history.py runs end to end on tiny sizes and prints, as its last line, the JSON keys it promises.

A smoke test, never a timed assertion: the figures depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import json

import pytest

from bench.history import main


def test_history_bench_reports_fold_write_and_snapshot_by_months_and_processor_rss_by_accounts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--members", "40", "--months", "1,3", "--repeat", "1", "--accounts", "300", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("fold_us_per_event", "freeze_us_per_event", "write_us_per_event", "fold_server_us_per_event",
                "snapshot_bytes"):
        assert set(result[key]) == {"1", "3"}, key
        assert all(v > 0 for v in result[key].values()), key
    # an account with three months of history encodes more than one with one month
    assert result["snapshot_bytes"]["3"] > result["snapshot_bytes"]["1"]
    assert set(result["processor_rss_mb"]) == {"300"} == set(result["processor_peak_rss_mb"])
    assert result["processor_rss_mb"]["300"] > 20  # the resident set of a Python process holding the ledger
    assert result["rss_records"] == {"300": 904}  # 3 records an account, the rate on each of 4 partitions
