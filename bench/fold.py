"""The pure fold's CPU cost per event: the demo program folded in memory, no broker, no database.

Measures ``BatchProcessor.process`` (decode, dedupe, fold, detect, collect rows; the store is the
in-memory one and its commit is timed apart) over the demo program, in batches as the processor
takes them. Prints microseconds of CPU per event (median of --repeat runs); quote ratios between two
builds measured back to back, not absolute figures, on a noisy machine.

    python bench/fold.py --members 2000 --months 12 --repeat 3 [--json]
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from events import codec  # noqa: E402
from events.topics import TopicSettings, topic_for  # noqa: E402
from processor.batch import BatchProcessor, Record, partition_for  # noqa: E402
from processor.settings import PlanSettings  # noqa: E402
from projections.memory import MemoryStore  # noqa: E402

PARTITIONS = 4
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _generate() -> Any:
    for name in ("processor.entrypoints.demo",):
        try:
            return importlib.import_module(name).generate
        except ImportError:
            continue
    raise SystemExit("no demo generator found")


def records(members: int, months: int, seed: int) -> list[Record]:
    program = _generate()(members=members, months=months, seed=seed)
    topics = TopicSettings()
    offsets: dict[tuple[str, int], int] = {}
    out: list[Record] = []

    def add(topic: str, partition: int, key: bytes | None, value: bytes) -> None:
        offset = offsets.get((topic, partition), 0)
        offsets[(topic, partition)] = offset + 1
        out.append(Record(topic=topic, partition=partition, offset=offset, key=key, value=value))

    for _, events in program.phases:
        for e in events:
            body = codec.encode(e)
            if type(e).BROADCAST:
                for p in range(PARTITIONS):
                    add(topic_for(e, topics), p, None, body)
            else:
                key = e.account_id.encode()
                add(topic_for(e, topics), partition_for(key, PARTITIONS), key, body)
    return out


def measure(recs: list[Record], batch: int) -> tuple[float, float]:
    """CPU seconds in process() and in the in-memory commit."""
    store = MemoryStore()
    proc = BatchProcessor(store, log_id="bench", plan=PlanSettings(), topics=TopicSettings(),
                          partitions=PARTITIONS, clock=lambda: NOW)
    fold_s = commit_s = 0.0
    for i in range(0, len(recs), batch):
        t0 = time.process_time()
        result = proc.process(recs[i:i + batch])
        t1 = time.process_time()
        store.commit_batch(result.write)
        proc.committed(result)
        commit_s += time.process_time() - t1
        fold_s += t1 - t0
    return fold_s, commit_s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=2000)
    ap.add_argument("--months", type=int, default=12)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    recs = records(args.members, args.months, args.seed)
    runs = [measure(recs, args.batch) for _ in range(args.repeat)]
    fold_us = statistics.median(f for f, _ in runs) / len(recs) * 1e6
    commit_us = statistics.median(c for _, c in runs) / len(recs) * 1e6
    result = {"records": len(recs), "fold_cpu_us_per_event": round(fold_us, 2),
              "memory_commit_cpu_us_per_event": round(commit_us, 2)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{len(recs):,} records: fold {fold_us:.1f} us/event CPU (process), in-memory commit"
              f" {commit_us:.1f} us/event (median of {args.repeat})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
