"""Replay equals live: fold the whole archive and compare every projection row with the live tables.

The archive and the live tables are read in one REPEATABLE READ transaction, so a processor that keeps
committing while the check runs cannot produce a false mismatch. The archive streams through
replay.stream a group of accounts at a time: each group is compared with the live rows of its accounts
as it comes and dropped, so memory stays bounded whatever the archive's size; the partitions' reference
data, payer cash and live rows of accounts the archive does not have are compared at the end.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
import psycopg

from processor.settings import PlanSettings
from processor.state import decode_partition
from processor.stored import assemble_account
from projections.model import CoverageRow, DiscrepancyRow, FsaRow, MonthRow
from projections.postgres_reads import DISCREPANCY_COLUMNS, MONTH_COLUMNS, discrepancy_row
from replay.archive import connect
from replay.fold import ReplayError, ReplayResult
from replay.stream import ACCOUNTS_MAX, BYTES_MAX, GroupResult, PartitionResult, StreamTotals, stream_archive

DISCREPANCY_FIELDS = (
    "kind", "account_id", "coverage_month", "payer_id", "expected_cents", "actual_cents",
    "cause_event_ids", "explanation", "action", "actor", "status", "opened_by", "resolved_by",
    "opened_recorded_at", "resolved_recorded_at", "assignee", "work_status", "notes", "last_user", "last_reason",
    "last_event_id", "pending_action", "pending_cents", "pending_by", "pending_event_id",
)  # fmt: skip


MISMATCHES_MAX = 1000
# The projections kept per account (the rest: partition_state, payer_unapplied).
ACCOUNT_TABLES = ("member_month", "member_coverage", "discrepancy", "account_snapshot", "fsa_account")


@dataclass(slots=True)
class VerifyReport:
    events_replayed: int = 0
    rows_compared: int = 0
    mismatches: list[dict[str, Any]] = field(default_factory=list)  # the first ``mismatches_max``
    tables: dict[str, int] = field(default_factory=dict)  # rows compared per table
    mismatches_found: int = 0
    mismatches_max: int = MISMATCHES_MAX

    @property
    def ok(self) -> bool:
        return not self.mismatches_found and not self.mismatches

    def add(self, mismatch: dict[str, Any]) -> None:
        self.mismatches_found += 1
        if len(self.mismatches) < self.mismatches_max:
            self.mismatches.append(mismatch)

    def merge(self, other: VerifyReport) -> None:
        """The comparisons of another process (its groups)."""
        self.rows_compared += other.rows_compared
        for table, n in other.tables.items():
            self.tables[table] = self.tables.get(table, 0) + n
        self.mismatches_found += other.mismatches_found
        self.mismatches.extend(other.mismatches[: max(0, self.mismatches_max - len(self.mismatches))])

    def as_json(self) -> dict[str, Any]:
        return {"events_replayed": self.events_replayed, "rows_compared": self.rows_compared,
                "mismatches": self.mismatches, "mismatches_found": self.mismatches_found, "tables": self.tables}


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
    """Compare two keyed row sets; every key of either side is one compared row (added to the counts)."""
    keys = live.keys() | replayed.keys()
    report.tables[table] = report.tables.get(table, 0) + len(keys)
    report.rows_compared += len(keys)
    same = equal or (lambda x, y: x == y)
    for key in sorted(keys, key=repr):
        a, b = live.get(key), replayed.get(key)
        if a is not None and b is not None and same(a, b):
            continue
        report.add({
            "table": table,
            "key": list(key) if isinstance(key, tuple) else key,
            "problem": "missing in live" if a is None else "missing in replay" if b is None else "differs",
            "fields": _differing(a, b) if a is not None and b is not None else [],
            "live": _plain(a),
            "replay": _plain(b),
        })


def _discrepancy_key(d: DiscrepancyRow) -> tuple[Any, ...]:
    return tuple(getattr(d, f) if f != "cause_event_ids" else tuple(d.cause_event_ids) for f in DISCREPANCY_FIELDS)


_LIVE_ACCOUNT_QUERIES = {
    "member_month": f"SELECT {MONTH_COLUMNS} FROM member_month",
    "member_coverage": "SELECT account_id, segment, member_id, relationship, coverage_line, plan, tier, status,"
                       " begin_on, end_on, agency_id, event_id FROM member_coverage",
    "discrepancy": f"SELECT {DISCREPANCY_COLUMNS} FROM discrepancy",
    "account_snapshot": "SELECT account_id, partition, state FROM account_snapshot",
    "fsa_account": "SELECT account_id, member_id, plan_year, account_type, election_cents, contributed_cents,"
                   " reimbursed_cents, carryover_in_cents, carryover_out_cents, available_cents, closed"
                   " FROM fsa_account",
}


def _keyed(table: str, rows: Iterable[Any]) -> dict[Hashable, Any]:
    if table == "member_month":
        return {(r[0], r[1]): MonthRow(*r) for r in rows}
    if table == "member_coverage":
        return {(r[0], r[1]): CoverageRow(r[0], *r[2:]) for r in rows}
    if table == "discrepancy":
        return {r[0]: discrepancy_row(r) for r in rows}
    if table == "account_snapshot":  # the headers; load_live_accounts adds each account's month rows
        return {r[0]: (int(r[1]), bytes(r[2])) for r in rows}
    assert table == "fsa_account", table
    return {(r[0], r[2], r[3]): FsaRow(*r) for r in rows}


def load_live_accounts(
    conn: psycopg.Connection[tuple[Any, ...]], accounts: list[str] | None = None, *, where: str = "",
) -> dict[str, dict[Hashable, Any]]:
    """The live per-account tables, keyed as replay keys them: of the named accounts, or all (``where``:
    a condition on the table's rows instead)."""
    out: dict[str, dict[Hashable, Any]] = {}
    for table, query in _LIVE_ACCOUNT_QUERIES.items():
        if accounts is not None:
            rows = conn.execute(f"{query} WHERE account_id = ANY(%s)".encode(), (accounts,)).fetchall()
        else:
            rows = conn.execute(f"{query} {where}".encode()).fetchall()
        out[table] = _keyed(table, rows)
    month_query = "SELECT account_id, month_key, state, findings FROM account_month_state"
    if accounts is not None:
        month_rows = conn.execute(f"{month_query} WHERE account_id = ANY(%s) ORDER BY account_id, ordinal".encode(),
                                  (accounts,)).fetchall()
    else:
        month_rows = conn.execute(f"{month_query} {where} ORDER BY account_id, ordinal".encode()).fetchall()
    months: dict[str, list[tuple[str, bytes, bytes | None]]] = {}
    for account_id, key, raw, findings in month_rows:
        months.setdefault(account_id, []).append((key, bytes(raw), None if findings is None else bytes(findings)))
    out["account_snapshot"] = {a: (partition, assemble_account(header, months.get(str(a), [])))
                               for a, (partition, header) in out["account_snapshot"].items()}
    return out


def load_live(conn: psycopg.Connection[tuple[Any, ...]]) -> dict[str, dict[Hashable, Any]]:
    """The live projection tables, keyed as replay keys them."""
    tables = load_live_accounts(conn)
    tables["payer_unapplied"] = {
        r[0]: int(r[1])
        for r in conn.execute("SELECT payer_id, unapplied_cents FROM payer_unapplied WHERE unapplied_cents <> 0")
    }
    tables["partition_state"] = {
        int(r[0]): decode_partition(bytes(r[1])) for r in conn.execute("SELECT partition, state FROM partition_state")
    }
    return tables


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


def compare_accounts(report: VerifyReport, live: dict[str, dict[Hashable, Any]],
                     mine: dict[str, dict[Hashable, Any]]) -> None:
    """Compare the per-account tables (of some accounts, or of all)."""
    for table in ("member_month", "member_coverage", "fsa_account"):
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
            report.add({"table": "account_snapshot", "key": account, "problem": "differs",
                        "fields": ["partition (column)"], "live": partition, "replay": replayed[0]})


class Comparer:
    """Compares each replayed group with the live rows of its accounts, on the replay's own snapshot."""

    def __init__(self, conn: psycopg.Connection[tuple[Any, ...]], report: VerifyReport) -> None:
        self.conn = conn
        self.report = report
        self.live_rows: dict[str, int] = dict.fromkeys(ACCOUNT_TABLES, 0)  # live rows of the accounts seen

    def group(self, group: GroupResult) -> None:
        live = load_live_accounts(self.conn, sorted(group.accounts))
        for table, rows in live.items():
            self.live_rows[table] += len(rows)
        compare_accounts(self.report, live, replayed_tables(
            ReplayResult(accounts=group.accounts, discrepancies=group.discrepancies)))

    def partition(self, part: PartitionResult) -> None:
        pass

    def outcome(self) -> tuple[VerifyReport, dict[str, int]]:
        return self.report, self.live_rows


def comparer(conn: psycopg.Connection[tuple[Any, ...]]) -> Comparer:
    """A worker's comparer (replay.parallel), reporting as much as the coordinator's would."""
    return Comparer(conn, VerifyReport())


def finish_comparison(conn: psycopg.Connection[tuple[Any, ...]], report: VerifyReport, totals: StreamTotals,
                      live_rows: dict[str, int]) -> None:
    """After every group: the partitions' reference data, payer cash, and the live rows of accounts the
    archive does not have (there are more live rows than those of the accounts replayed)."""
    report.events_replayed = totals.events_replayed
    partitions: dict[Hashable, Any] = {int(r[0]): decode_partition(bytes(r[1]))
                                       for r in conn.execute("SELECT partition, state FROM partition_state")}
    compare(report, "partition_state", partitions, {p: s for p, s in totals.states().items()})
    payers: dict[Hashable, Any] = {r[0]: int(r[1]) for r in conn.execute(
        "SELECT payer_id, unapplied_cents FROM payer_unapplied WHERE unapplied_cents <> 0")}
    compare(report, "payer_unapplied", payers, {p: c for p, c in totals.payer_cash().items()})
    extra = False
    for table in ACCOUNT_TABLES:
        row = conn.execute(f"SELECT count(*) FROM {table}".encode()).fetchone()
        extra = extra or (row is not None and int(row[0]) > live_rows.get(table, 0))
    if extra:
        live = load_live_accounts(conn, where="t WHERE NOT EXISTS (SELECT 1 FROM archive a"
                                              " WHERE a.account_id = t.account_id)")
        compare_accounts(report, live, {table: {} for table in ACCOUNT_TABLES})


def verify_connection(
    conn: psycopg.Connection[tuple[Any, ...]], plan: PlanSettings,
    progress: Callable[[int], None] | None = None, *, workers: int = 1, dsn: str | None = None,
    accounts_max: int = ACCOUNTS_MAX, bytes_max: int = BYTES_MAX, mismatches_max: int = MISMATCHES_MAX,
) -> VerifyReport:
    """Replay the whole archive on ``conn`` (one snapshot) and compare with the live tables. With
    ``workers`` > 1 (and the ``dsn``) the partitions fold in that many processes on the same snapshot."""
    report = VerifyReport(mismatches_max=mismatches_max)
    try:
        if workers > 1 and dsn is not None:
            from replay.parallel import replay_parallel

            totals, parts = replay_parallel(conn, dsn, plan, workers=workers, consumer=comparer,
                                            accounts_max=accounts_max, bytes_max=bytes_max)
            live_rows: dict[str, int] = dict.fromkeys(ACCOUNT_TABLES, 0)
            for part, rows in parts:
                report.merge(part)
                for table, n in rows.items():
                    live_rows[table] += n
        else:
            mine = Comparer(conn, report)
            totals = stream_archive(conn, plan, mine, progress=progress, accounts_max=accounts_max,
                                    bytes_max=bytes_max)
            live_rows = mine.live_rows
    except ReplayError as exc:
        report.add({"table": "archive", "key": None, "problem": str(exc), "fields": [],
                    "live": None, "replay": None})
        return report
    finish_comparison(conn, report, totals, live_rows)
    return report


def verify(
    dsn: str, plan: PlanSettings, progress: Callable[[int], None] | None = None, *, workers: int = 1,
    accounts_max: int = ACCOUNTS_MAX, bytes_max: int = BYTES_MAX,
) -> VerifyReport:
    """``benefits-ledger replay --verify``: replay of everything must equal the live projections."""
    with connect(dsn) as conn:
        try:
            return verify_connection(conn, plan, progress, workers=workers, dsn=dsn, accounts_max=accounts_max,
                                     bytes_max=bytes_max)
        finally:
            conn.rollback()
