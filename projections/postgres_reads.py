"""The store's reads for people and reports: balances, discrepancies and the work queue, summaries,
history. ``PostgresStore`` (projections/postgres.py) has them; the write path is there.

The column lists are the tables' as the readers outside the store see them too (replay/verify.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

import psycopg

from projections.model import (
    DISCREPANCIES_STREAM,
    UNASSIGNED,
    AccountBalance,
    AccountRow,
    AgencyRow,
    Counts,
    CoverageRow,
    DeadLetterRow,
    DiscrepancyRow,
    EventStatus,
    FsaRow,
    HistoryEntry,
    MonthRow,
    QueuePage,
    QueueQuery,
    Summary,
    merge_history,
)

MONTH_COLUMNS = (
    "account_id, coverage_month, partition, expected_cents, billed_cents, adjusted_cents, paid_cents,"
    " unapplied_cents, balance_cents, due_on, refunded_cents, post_tax_cents, imputed_income_cents,"
    " employee_share_cents, employer_share_cents"
)

DISCREPANCY_COLUMNS = (
    "discrepancy_id, kind, account_id, coverage_month, payer_id, expected_cents, actual_cents,"
    " cause_event_ids, explanation, action, actor, status, opened_by, resolved_by, opened_recorded_at,"
    " resolved_recorded_at, assignee, work_status, notes, last_user, last_reason, last_event_id,"
    " pending_action, pending_cents, pending_by, pending_event_id"
)

FSA_COLUMNS = (
    "account_id, member_id, plan_year, account_type, election_cents, contributed_cents, reimbursed_cents,"
    " carryover_in_cents, carryover_out_cents, available_cents, closed"
)

# The agency a discrepancy belongs to (processor.rules.workflow.agency_of, projections.model.discrepancy_agency):
# a payer account's payer, else the agency of the subscriber coverage that began last, else its payer.
_DISCREPANCY_AGENCY = """
CASE WHEN d.account_id LIKE 'payer:%%' THEN substr(d.account_id, 7)
     ELSE coalesce((SELECT c.agency_id FROM member_coverage c
                    WHERE c.account_id = d.account_id AND c.relationship = 'self'
                    ORDER BY c.begin_on DESC, c.agency_id DESC LIMIT 1), d.payer_id) END
"""

# The agency of an account: a payer account's payer, else that of its subscriber coverage that began last.
_ACCOUNT_AGENCIES = """
WITH own AS (
    SELECT DISTINCT ON (account_id) account_id, agency_id FROM member_coverage WHERE relationship = 'self'
    ORDER BY account_id, begin_on DESC, agency_id DESC
), acct AS (
    SELECT s.account_id,
           CASE WHEN s.account_id LIKE 'payer:%%' THEN substr(s.account_id, 7) ELSE own.agency_id END AS agency_id
    FROM account_snapshot s LEFT JOIN own USING (account_id)
)
"""

_QUEUE_ORDER = {
    "age": "opened_recorded_at", "amount": "abs(expected_cents - actual_cents)", "agency": "agency_id",
    "kind": "kind", "actor": 'actor COLLATE "C"', "assignee": "assignee", "account": "account_id",
}

_COVERAGE_COLUMNS = (
    "account_id, member_id, relationship, coverage_line, plan, tier, status, begin_on, end_on, agency_id,"
    " event_id"
)

# Sums over the whole ledger are numeric: each month stays far inside bigint (processor.bounds), their
# total over millions of months need not.
_SUMMARY_MONTHS = """
SELECT count(*) FILTER (WHERE expected_cents IS NOT NULL OR billed_cents <> 0),
       coalesce(sum(billed_cents), 0)::numeric,
       coalesce(sum(adjusted_cents), 0)::numeric,
       coalesce(sum(paid_cents), 0)::numeric,
       coalesce(sum(balance_cents) FILTER (WHERE balance_cents > 0), 0)::numeric,
       coalesce(-sum(balance_cents) FILTER (WHERE balance_cents < 0), 0)::numeric
FROM member_month
"""

_COUNTS = """
SELECT coalesce(sum(applied), 0)::bigint, coalesce(sum(duplicates), 0)::bigint,
       coalesce(sum(dead_lettered), 0)::bigint
FROM positions
"""


def discrepancy_row(row: Sequence[Any]) -> DiscrepancyRow:
    return DiscrepancyRow(
        discrepancy_id=row[0], kind=row[1], account_id=row[2], coverage_month=row[3], payer_id=row[4],
        expected_cents=row[5], actual_cents=row[6], cause_event_ids=tuple(row[7]), explanation=row[8],
        action=row[9], actor=row[10], status=row[11], opened_by=row[12], resolved_by=row[13],
        opened_recorded_at=row[14], resolved_recorded_at=row[15], assignee=row[16], work_status=row[17],
        notes=row[18], last_user=row[19], last_reason=row[20], last_event_id=row[21], pending_action=row[22],
        pending_cents=row[23], pending_by=row[24], pending_event_id=row[25],
        agency_id=row[26] if len(row) > 26 else None,
    )


class PostgresReads:
    """The query side of ``PostgresStore``: every read runs in a transaction of its own (``_tx``)."""

    def _tx(self) -> AbstractContextManager[psycopg.Connection[tuple[Any, ...]]]:
        raise NotImplementedError


    def balance(self, account_id: str) -> AccountBalance | None:
        """Coverage, months and open discrepancies of one account; None if the ledger never saw it."""
        with self._tx() as conn:
            known = conn.execute("SELECT 1 FROM account_snapshot WHERE account_id = %s", (account_id,))
            if known.fetchone() is None:
                return None
            coverages = conn.execute(
                f"SELECT {_COVERAGE_COLUMNS} FROM member_coverage WHERE account_id = %s ORDER BY segment",
                (account_id,),
            ).fetchall()
            months = conn.execute(
                f"SELECT {MONTH_COLUMNS} FROM member_month WHERE account_id = %s ORDER BY coverage_month",
                (account_id,),
            ).fetchall()
            open_rows = self._discrepancies(conn, True, None, account_id, 1000)
        return AccountBalance(
            account_id=account_id,
            coverages=[CoverageRow(*r) for r in coverages],
            months=[MonthRow(*r) for r in months],
            open_discrepancies=open_rows,
        )

    def discrepancies(
        self, *, open_only: bool = False, kind: str | None = None, account_id: str | None = None,
        limit: int = 1000,
    ) -> list[DiscrepancyRow]:
        """Discrepancies by account, month (none first), kind and id."""
        with self._tx() as conn:
            return self._discrepancies(conn, open_only, kind, account_id, limit)

    @staticmethod
    def _discrepancies(
        conn: psycopg.Connection[tuple[Any, ...]], open_only: bool, kind: str | None, account_id: str | None,
        limit: int,
    ) -> list[DiscrepancyRow]:
        where: list[str] = []
        params: list[Any] = []
        if open_only:
            where.append("status = 'open'")
        if kind is not None:
            where.append("kind = %s")
            params.append(kind)
        if account_id is not None:
            where.append("account_id = %s")
            params.append(account_id)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        query = (
            f"SELECT {DISCREPANCY_COLUMNS} FROM discrepancy {clause}"
            " ORDER BY account_id, coverage_month NULLS FIRST, kind, discrepancy_id LIMIT %s"
        )
        rows = conn.execute(query.encode(), [*params, limit]).fetchall()
        return [discrepancy_row(r) for r in rows]

    def counts(self) -> Counts:
        """Events received, applied, dropped as duplicates and dead-lettered, over all positions."""
        with self._tx() as conn:
            return self._counts(conn)

    @staticmethod
    def _counts(conn: psycopg.Connection[tuple[Any, ...]]) -> Counts:
        row = conn.execute(_COUNTS).fetchone()
        assert row is not None
        applied, dup, dead = (int(v) for v in row)
        return Counts(received=applied + dup + dead, applied=applied, duplicates=dup, dead_lettered=dead)

    def summary(self) -> Summary:
        """Totals over the projections, with the same definitions as MemoryStore.summary."""
        with self._tx() as conn:
            members_row = conn.execute(
                "SELECT (SELECT count(*) FROM"
                "         (SELECT DISTINCT account_id, member_id FROM member_coverage) m),"
                " (SELECT count(DISTINCT account_id) FROM member_coverage),"
                " (SELECT coalesce(sum(unapplied_cents), 0)::numeric FROM payer_unapplied)"
            ).fetchone()
            months_row = conn.execute(_SUMMARY_MONTHS).fetchone()
            kinds = conn.execute(
                "SELECT kind, count(*), count(*) FILTER (WHERE status = 'open')"
                " FROM discrepancy GROUP BY kind"
            ).fetchall()
            counts = self._counts(conn)
        assert members_row is not None and months_row is not None
        members, accounts, unapplied = (int(v) for v in members_row)
        coverage_months, billed, adjusted, paid, outstanding, credits = (int(v) for v in months_row)
        kinds.sort(key=lambda r: r[0])
        return Summary(
            members=members,
            accounts=accounts,
            coverage_months=coverage_months,
            billed_cents=billed,
            adjusted_cents=adjusted,
            paid_cents=paid,
            outstanding_cents=outstanding,
            credits_cents=credits,
            unapplied_cents=unapplied,
            discrepancies_opened_by_kind={k: int(n) for k, n, _ in kinds},
            discrepancies_open_by_kind={k: int(o) for k, _, o in kinds if o},
            counts=counts,
        )

    def archive_count(self) -> int:
        """Number of archived events."""
        with self._tx() as conn:
            row = conn.execute("SELECT count(*) FROM archive").fetchone()
        assert row is not None
        return int(row[0])

    def dead_letters(self, limit: int = 1000) -> list[DeadLetterRow]:
        """Dead-lettered records in the order recorded."""
        with self._tx() as conn:
            rows = conn.execute(
                'SELECT log_id, topic, partition, "offset", event_id, reason, field, key, raw, recorded_at'
                " FROM dead_letter ORDER BY seq LIMIT %s",
                (limit,),
            ).fetchall()
        return [
            DeadLetterRow(log_id=r[0], topic=r[1], partition=r[2], offset=r[3], event_id=r[4], reason=r[5],
                          field=r[6], key=None if r[7] is None else bytes(r[7]), raw=bytes(r[8]),
                          recorded_at=r[9])
            for r in rows
        ]  # fmt: skip

    def fsa_accounts(self, account_id: str) -> list[FsaRow]:
        """The account's flexible spending accounts by plan year and account type."""
        with self._tx() as conn:
            rows = conn.execute(
                f"SELECT {FSA_COLUMNS} FROM fsa_account WHERE account_id = %s ORDER BY plan_year, account_type",
                (account_id,),
            ).fetchall()
        return [FsaRow(*r) for r in rows]

    def payer_unapplied(self) -> dict[str, int]:
        """Unapplied cash per payer, non-zero only, by payer id."""
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT payer_id, unapplied_cents FROM payer_unapplied WHERE unapplied_cents <> 0"
                " ORDER BY payer_id"
            ).fetchall()
        return {p: int(c) for p, c in rows}

    def member_months(self, limit: int = 1000) -> list[MonthRow]:
        """Member-month rows of every account, by account and month."""
        with self._tx() as conn:
            rows = conn.execute(
                f"SELECT {MONTH_COLUMNS} FROM member_month ORDER BY account_id, coverage_month LIMIT %s", (limit,),
            ).fetchall()
        return [MonthRow(*r) for r in rows]

    # -- the workbench's reads ----------------------------------------------------------------

    def discrepancy_queue(self, query: QueueQuery) -> QueuePage:
        """Discrepancies matching the filters, in the queue's order, with their agency."""
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("status", query.status), ("kind", query.kind), ("account_id", query.account_id),
                              ("payer_id", query.payer_id), ("actor", query.actor),
                              ("work_status", query.work_status)):
            if value is not None:
                where.append(f"{column} = %s")
                params.append(value)
        if query.assignee is not None:
            if query.assignee == UNASSIGNED:
                where.append("assignee IS NULL")
            else:
                where.append("assignee = %s")
                params.append(query.assignee)
        if query.pending is not None:
            where.append("pending_action IS NOT NULL" if query.pending else "pending_action IS NULL")
        if query.agency_id is not None:
            where.append("agency_id = %s")
            params.append(query.agency_id)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows_of = f"(SELECT d.*, {_DISCREPANCY_AGENCY} AS agency_id FROM discrepancy d) q"
        desc = (query.sort == "amount") != query.descending
        order = f"{_QUEUE_ORDER[query.sort]} {'DESC' if desc else 'ASC'} NULLS LAST, discrepancy_id"
        with self._tx() as conn:
            total_row = conn.execute(f"SELECT count(*) FROM {rows_of} {clause}".encode(), params).fetchone()
            rows = conn.execute(
                f"SELECT {DISCREPANCY_COLUMNS}, agency_id FROM {rows_of} {clause} ORDER BY {order}"
                " LIMIT %s OFFSET %s".encode(), [*params, query.limit, query.offset],
            ).fetchall()
        assert total_row is not None
        return QueuePage(rows=[discrepancy_row(r) for r in rows], total=int(total_row[0]))

    def discrepancy(self, discrepancy_id: str) -> DiscrepancyRow | None:
        """One discrepancy with its agency, or None."""
        with self._tx() as conn:
            row = conn.execute(
                f"SELECT {DISCREPANCY_COLUMNS}, {_DISCREPANCY_AGENCY} FROM discrepancy d"
                " WHERE discrepancy_id = %s".encode(), (discrepancy_id,),
            ).fetchone()
        return None if row is None else discrepancy_row(row)

    def account_history(self, account_id: str, *, limit: int = 10_000) -> list[HistoryEntry]:
        """The account's archived events in applied order, each followed by the discrepancy events the
        ledger emitted because of it (from the outbox; recorded when their cause was: for a broadcast
        cause, its copy on the account's partition)."""
        with self._tx() as conn:
            archived = conn.execute(
                "SELECT seq, event_id, event_type, account_id, effective_on, occurred_at, recorded_at, body"
                " FROM archive WHERE account_id = %s ORDER BY seq LIMIT %s", (account_id, limit),
            ).fetchall()
            emitted = conn.execute(
                "SELECT o.seq, o.event_id, o.body, cause.seq, cause.recorded_at FROM outbox o"
                " LEFT JOIN LATERAL (SELECT a.seq, a.recorded_at FROM archive a"
                "   WHERE a.event_id = convert_from(o.body, 'UTF8')::jsonb->>'causation_id'"
                "   ORDER BY coalesce(a.partition = (SELECT partition FROM account_snapshot WHERE account_id = %s),"
                "                     false) DESC, a.seq LIMIT 1) cause ON true"
                " WHERE o.key = %s AND o.stream = %s ORDER BY o.seq LIMIT %s",
                (account_id, account_id, DISCREPANCIES_STREAM, limit),
            ).fetchall()
        return merge_history(
            [HistoryEntry(seq=r[0], event_id=r[1], event_type=r[2], account_id=r[3], effective_on=r[4],
                          occurred_at=r[5], recorded_at=r[6], body=bytes(r[7])) for r in archived],
            [(r[0], bytes(r[2]), r[3], r[4]) for r in emitted], account_id, limit,
        )

    def event_status(self, event_ids: list[str]) -> dict[str, EventStatus]:
        """Which of the events were applied (archived) or dead-lettered; the others are still pending."""
        if not event_ids:
            return {}
        out: dict[str, EventStatus] = {}
        with self._tx() as conn:
            dead = conn.execute(
                "SELECT DISTINCT ON (event_id) event_id, recorded_at, reason, field FROM dead_letter"
                " WHERE event_id = ANY(%s) ORDER BY event_id, seq DESC", (event_ids,),
            ).fetchall()
            applied = conn.execute(
                "SELECT DISTINCT ON (event_id) event_id, recorded_at, account_id FROM archive"
                " WHERE event_id = ANY(%s) ORDER BY event_id, seq", (event_ids,),
            ).fetchall()
        for e, rec, reason, fld in dead:
            out[e] = EventStatus(event_id=e, state="dead_lettered", recorded_at=rec, reason=reason, field=fld)
        for e, rec, account in applied:  # applied wins over an earlier dead letter (a retry)
            out[e] = EventStatus(event_id=e, state="applied", recorded_at=rec, account_id=account)
        return out

    def agencies(self) -> list[AgencyRow]:
        """Every agency with its accounts, open discrepancies and outstanding balance, by id."""
        with self._tx() as conn:
            rows = conn.execute(
                (_ACCOUNT_AGENCIES + f"""
                , owed AS (
                    SELECT acct.agency_id, count(*) AS accounts,
                           coalesce(sum((SELECT coalesce(sum(m.balance_cents), 0) FROM member_month m
                                         WHERE m.account_id = acct.account_id AND m.balance_cents > 0)), 0) AS owed
                    FROM acct WHERE acct.agency_id IS NOT NULL GROUP BY acct.agency_id
                ), open_d AS (
                    SELECT {_DISCREPANCY_AGENCY} AS agency_id, count(*) AS n FROM discrepancy d
                    WHERE d.status = 'open' GROUP BY 1
                )
                SELECT coalesce(owed.agency_id, open_d.agency_id) AS agency_id, coalesce(owed.accounts, 0),
                       coalesce(open_d.n, 0), coalesce(owed.owed, 0)::bigint
                FROM owed FULL JOIN open_d ON open_d.agency_id = owed.agency_id
                WHERE coalesce(owed.agency_id, open_d.agency_id) IS NOT NULL
                ORDER BY 1""").encode(), (),
            ).fetchall()
        return [AgencyRow(agency_id=r[0], accounts=int(r[1]), open_discrepancies=int(r[2]),
                          outstanding_cents=int(r[3])) for r in rows]

    def accounts(self, *, prefix: str = "", agency_id: str | None = None, limit: int = 200) -> list[AccountRow]:
        """Accounts the ledger knows whose id starts with ``prefix`` (of one agency), by id."""
        with self._tx() as conn:
            rows = conn.execute(
                (_ACCOUNT_AGENCIES + """
                SELECT acct.account_id, acct.agency_id,
                       (SELECT coalesce(sum(m.balance_cents), 0) FROM member_month m
                        WHERE m.account_id = acct.account_id)::bigint,
                       (SELECT count(*) FROM discrepancy d WHERE d.account_id = acct.account_id AND d.status = 'open')
                FROM acct WHERE starts_with(acct.account_id, %s) AND (%s::text IS NULL OR acct.agency_id = %s)
                ORDER BY acct.account_id LIMIT %s""").encode(), (prefix, agency_id, agency_id, limit),
            ).fetchall()
        return [AccountRow(account_id=r[0], agency_id=r[1], balance_cents=int(r[2]), open_discrepancies=int(r[3]))
                for r in rows]
