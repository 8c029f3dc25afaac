"""Replay equals live: fold the whole archive and compare every projection row with the live tables.

The archive and the live tables are read in one REPEATABLE READ transaction, so a processor that keeps
committing while the check runs cannot produce a false mismatch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
import psycopg

from processor.settings import PlanSettings
from processor.state import decode_account, decode_partition
from projections.model import CoverageRow, DiscrepancyRow, FsaRow, MonthRow
from projections.postgres import DISCREPANCY_COLUMNS, MONTH_COLUMNS, discrepancy_row
from replay.archive import connect, read_archive
from replay.fold import ReplayError, ReplayResult, replay

DISCREPANCY_FIELDS = (
    "kind", "account_id", "coverage_month", "payer_id", "expected_cents", "actual_cents",
    "cause_event_ids", "explanation", "action", "actor", "status", "opened_by", "resolved_by",
    "opened_recorded_at", "resolved_recorded_at", "assignee", "work_status", "notes", "last_user", "last_reason",
    "last_event_id", "pending_action", "pending_cents", "pending_by", "pending_event_id",
)  # fmt: skip


@dataclass(slots=True)
class VerifyReport:
    events_replayed: int = 0
    rows_compared: int = 0
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    tables: dict[str, int] = field(default_factory=dict)  # rows compared per table

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def as_json(self) -> dict[str, Any]:
        return {"events_replayed": self.events_replayed, "rows_compared": self.rows_compared,
                "mismatches": self.mismatches, "tables": self.tables}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, msgspec.Struct):
        return msgspec.to_builtins(value)
    return value


def _differing(live: Any, replayed: Any) -> list[str]:
    a, b = _plain(live), _plain(replayed)
    if isinstance(a, dict) and isinstance(b, dict):
        return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    return []


def compare(
    report: VerifyReport, table: str, live: Mapping[Hashable, Any], replayed: Mapping[Hashable, Any],
    *, equal: Callable[[Any, Any], bool] | None = None,
) -> None:
    """Compare two keyed row sets; every key of either side is one compared row."""
    keys = live.keys() | replayed.keys()
    report.tables[table] = len(keys)
    report.rows_compared += len(keys)
    same = equal or (lambda x, y: x == y)
    for key in sorted(keys, key=repr):
        a, b = live.get(key), replayed.get(key)
        if a is not None and b is not None and same(a, b):
            continue
        report.mismatches.append({
            "table": table,
            "key": list(key) if isinstance(key, tuple) else key,
            "problem": "missing in live" if a is None else "missing in replay" if b is None else "differs",
            "fields": _differing(a, b) if a is not None and b is not None else [],
            "live": _plain(a),
            "replay": _plain(b),
        })


def _discrepancy_key(d: DiscrepancyRow) -> tuple[Any, ...]:
    return tuple(getattr(d, f) if f != "cause_event_ids" else tuple(d.cause_event_ids) for f in DISCREPANCY_FIELDS)


def load_live(conn: psycopg.Connection[tuple[Any, ...]]) -> dict[str, dict[Hashable, Any]]:
    """The live projection tables, keyed as replay keys them."""
    months = {
        (r[0], r[1]): MonthRow(*r) for r in conn.execute(
            f"SELECT {MONTH_COLUMNS} FROM member_month"
        )
    }
    coverage = {
        (r[0], r[1]): CoverageRow(r[0], *r[2:]) for r in conn.execute(
            "SELECT account_id, segment, member_id, relationship, coverage_line, plan, tier, status,"
            " begin_on, end_on, agency_id, event_id FROM member_coverage"
        )
    }
    discrepancies = {
        r[0]: discrepancy_row(r) for r in conn.execute(f"SELECT {DISCREPANCY_COLUMNS} FROM discrepancy".encode())
    }
    payers = {
        r[0]: int(r[1])
        for r in conn.execute("SELECT payer_id, unapplied_cents FROM payer_unapplied WHERE unapplied_cents <> 0")
    }
    accounts = {
        r[0]: (int(r[1]), decode_account(bytes(r[2])))
        for r in conn.execute("SELECT account_id, partition, state FROM account_snapshot")
    }
    partitions = {
        int(r[0]): decode_partition(bytes(r[1])) for r in conn.execute("SELECT partition, state FROM partition_state")
    }
    fsa = {
        (r[0], r[2], r[3]): FsaRow(*r) for r in conn.execute(
            "SELECT account_id, member_id, plan_year, account_type, election_cents, contributed_cents,"
            " reimbursed_cents, carryover_in_cents, carryover_out_cents, available_cents, closed FROM fsa_account"
        )
    }
    return {"member_month": dict(months), "member_coverage": dict(coverage), "discrepancy": dict(discrepancies),
            "payer_unapplied": dict(payers), "account_snapshot": dict(accounts),
            "partition_state": dict(partitions), "fsa_account": dict(fsa)}


def replayed_tables(res: ReplayResult) -> dict[str, dict[Hashable, Any]]:
    """The same tables, derived from a replay."""
    coverage: dict[Hashable, Any] = {
        (account, i): row for account, rows in res.coverage_rows().items() for i, row in enumerate(rows)
    }
    months: dict[Hashable, Any] = {(m.account_id, m.coverage_month): m for m in res.month_rows()}
    discrepancies: dict[Hashable, Any] = {k: v for k, v in res.discrepancies.items()}
    payers: dict[Hashable, Any] = {k: v for k, v in res.payer_cash().items()}
    accounts: dict[Hashable, Any] = {a: (s.partition, s) for a, s in res.accounts.items()}
    partitions: dict[Hashable, Any] = {k: v for k, v in res.partitions.items()}
    fsa: dict[Hashable, Any] = {(f.account_id, f.plan_year, f.account_type): f for f in res.fsa_rows()}
    return {"member_month": months, "member_coverage": coverage, "discrepancy": discrepancies,
            "payer_unapplied": payers, "account_snapshot": accounts, "partition_state": partitions,
            "fsa_account": fsa}


def verify_connection(
    conn: psycopg.Connection[tuple[Any, ...]], plan: PlanSettings,
    progress: Callable[[int], None] | None = None, *, workers: int = 1, dsn: str | None = None,
) -> VerifyReport:
    """Replay the whole archive on ``conn`` (one snapshot) and compare with the live tables. With
    ``workers`` > 1 (and the ``dsn``) the partitions fold in that many processes on the same snapshot."""
    report = VerifyReport()
    try:
        if workers > 1 and dsn is not None:
            from replay.parallel import replay_parallel

            res = replay_parallel(conn, dsn, plan, workers=workers)
        else:
            res = replay(read_archive(conn), plan, progress=progress)
    except ReplayError as exc:
        report.mismatches.append({"table": "archive", "key": None, "problem": str(exc), "fields": [],
                                  "live": None, "replay": None})
        return report
    report.events_replayed = res.events_replayed
    live = load_live(conn)
    mine = replayed_tables(res)
    for table in ("member_month", "member_coverage", "payer_unapplied", "partition_state", "fsa_account"):
        compare(report, table, live[table], mine[table])
    compare(report, "discrepancy", live["discrepancy"], mine["discrepancy"],
            equal=lambda a, b: _discrepancy_key(a) == _discrepancy_key(b))
    compare(report, "account_snapshot",
            {k: v[1] for k, v in live["account_snapshot"].items()},
            {k: v[1] for k, v in mine["account_snapshot"].items()},
            equal=lambda a, b: a == b)
    for account, (partition, _state) in live["account_snapshot"].items():
        replayed = mine["account_snapshot"].get(account)
        if replayed is not None and replayed[0] != partition:
            report.mismatches.append({"table": "account_snapshot", "key": account, "problem": "differs",
                                      "fields": ["partition (column)"], "live": partition,
                                      "replay": replayed[0]})
    return report


def verify(
    dsn: str, plan: PlanSettings, progress: Callable[[int], None] | None = None, *, workers: int = 1,
) -> VerifyReport:
    """``benefits-ledger replay --verify``: replay of everything must equal the live projections."""
    with connect(dsn) as conn:
        try:
            return verify_connection(conn, plan, progress, workers=workers, dsn=dsn)
        finally:
            conn.rollback()
