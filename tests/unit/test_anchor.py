"""projections/anchor.py without a database: signing, the file log, and when a partition is due."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from projections.anchor import Anchorer, BadCheckpoint, Checkpoint, FileAnchorLog, decode_line, encode_line

KEY = b"k" * 32
CP = Checkpoint("ledger.public", 2, 41, "pay-1", bytes(range(32)), datetime(2026, 3, 1, 12, tzinfo=UTC))


def test_a_checkpoint_round_trips_and_any_changed_field_breaks_its_signature() -> None:
    line = encode_line(KEY, CP)
    assert decode_line(KEY, line) == CP
    doc = json.loads(line)
    for name, value in (("seq", 40), ("partition", 3), ("event_id", "pay-2"), ("chain_hash", "00" * 32),
                        ("archive", "other.public"), ("written_at", "2026-03-02T12:00:00+00:00")):
        with pytest.raises(BadCheckpoint, match="signature does not match"):
            decode_line(KEY, json.dumps({**doc, name: value}).encode())
    with pytest.raises(BadCheckpoint, match="signature does not match"):
        decode_line(b"x" * 32, line)
    with pytest.raises(BadCheckpoint, match="malformed"):
        decode_line(KEY, b"{not json")


def test_the_file_log_appends_privately(tmp_path: Path) -> None:
    log = FileAnchorLog(tmp_path / "anchors" / "ledger.jsonl")
    log.append([encode_line(KEY, CP)])
    log.append([encode_line(KEY, CP), encode_line(KEY, CP)])
    assert [where for where, _ in log.read()] == [f"{log.path}:{n}" for n in (1, 2, 3)]
    assert stat.S_IMODE(log.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.path.parent.stat().st_mode) == 0o700
    assert list(FileAnchorLog(tmp_path / "none.jsonl").read()) == []


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def rows(*partitions: int) -> list[SimpleNamespace]:
    return [SimpleNamespace(partition=p) for p in partitions]


def test_a_partition_is_due_after_enough_events_or_enough_time() -> None:
    clock = Clock()
    heads = {0: (0, 10, "e10", b"a" * 32, b"a" * 32), 1: (1, 11, "e11", b"b" * 32, b"b" * 32)}
    read: list[list[int]] = []

    def read_heads(partitions: list[int]) -> list[tuple[int, int, str, bytes, bytes]]:
        read.append(partitions)
        return [heads[p] for p in partitions]

    class Memory:
        name = "memory"
        lines: list[bytes] = []

        def append(self, lines: list[bytes]) -> None:
            self.lines.extend(lines)

    target = Memory()
    anchorer = Anchorer(KEY, [target], "ledger.public", read_heads, interval_events_max=3, interval_ms=1000,  # type: ignore[list-item]
                        clock=clock)
    anchorer.committed(rows(0, 0, 1))
    assert anchorer.due() == []
    anchorer.committed(rows(0))
    assert anchorer.due() == [0]  # three events of partition 0
    assert anchorer.checkpoint(anchorer.due()) == 1
    assert [decode_line(KEY, line).seq for line in target.lines] == [10]
    clock.now = 1.5
    assert anchorer.due() == [1]  # partition 1's first unanchored event is 1.5 s old
    assert anchorer.checkpoint() == 1 and anchorer.pending == {} and read == [[0], [1]]


def test_an_inconsistent_head_is_never_signed_and_a_failed_write_stays_pending() -> None:
    def read_heads(partitions: list[int]) -> list[tuple[int, int, str, bytes, bytes]]:
        return [(0, 5, "e5", b"a" * 32, b"z" * 32)]

    class Broken:
        name = "broken"

        def append(self, lines: list[bytes]) -> None:
            raise OSError(28, "No space left on device")

    anchorer = Anchorer(KEY, [], "ledger.public", read_heads, interval_events_max=1, interval_ms=1000)
    anchorer.committed(rows(0))
    assert anchorer.checkpoint() == 0 and anchorer.pending == {0: 1}

    ok = Anchorer(KEY, [Broken()], "ledger.public",  # type: ignore[list-item]
                  lambda ps: [(0, 5, "e5", b"a" * 32, b"a" * 32)], interval_events_max=1, interval_ms=1000)
    ok.committed(rows(0))
    assert ok.checkpoint() == 0 and ok.pending == {0: 1}, "retried after the next commit"


def test_events_committed_while_a_checkpoint_is_written_stay_pending() -> None:
    anchorer: Anchorer

    def read_heads(partitions: list[int]) -> list[tuple[int, int, str, bytes, bytes]]:
        anchorer.committed(rows(0, 0))  # another commit lands while the heads are read
        return [(0, 5, "e5", b"a" * 32, b"a" * 32)]

    class Memory:
        name = "memory"

        def append(self, lines: list[bytes]) -> None:
            pass

    anchorer = Anchorer(KEY, [Memory()], "ledger.public", read_heads, interval_events_max=3,  # type: ignore[list-item]
                        interval_ms=1000)
    anchorer.committed(rows(0, 0, 0))
    assert anchorer.checkpoint() == 1
    assert anchorer.pending == {0: 2}, "the two later events are not counted as covered"
