"""The SQL of the PostgreSQL store's writes and of the processor's index lookups (projections/postgres.py
runs them): positions, the archive and its chain, fold state, projections, discrepancies, the outbox."""

from __future__ import annotations

from projections.postgres_reads import DISCREPANCY_COLUMNS, FSA_COLUMNS

# Unique constraints whose violation means "this batch (or part of it) was already applied".
POSITION_CONSTRAINTS = frozenset({
    "archive_dedupe_key_key", "archive_position_key", "dead_letter_position_key", "positions_pkey",
})

ARCHIVE_COLUMNS = (
    'log_id, topic, partition, "offset", dedupe_key, event_id, event_type, account_id, effective_on,'
    " occurred_at, recorded_at, body, body_hash, chain_hash"
)
ARCHIVE_TYPES = [
    "text", "text", "int4", "int8", "text", "text", "text", "text", "date",
    "timestamptz", "timestamptz", "bytea", "bytea", "bytea",
]  # fmt: skip

# Lock (creating at genesis when new) and read the last chain link of each partition in the batch.
# The row lock lasts until the batch commits: a second writer of the same partition waits, then reads
# the link this batch leaves, so a partition's chain cannot fork (whatever the topic assignment).
LOCK_CHAIN_HEADS = """
INSERT INTO archive_chain_head AS h (partition, chain_hash)
SELECT * FROM unnest(%s::int[], %s::bytea[])
ON CONFLICT (partition) DO UPDATE SET chain_hash = h.chain_hash
RETURNING partition, chain_hash
"""

MOVE_CHAIN_HEADS = """
UPDATE archive_chain_head AS h SET chain_hash = u.chain_hash
FROM unnest(%s::int[], %s::bytea[]) AS u(partition, chain_hash)
WHERE h.partition = u.partition
"""

CHAIN_COLUMNS = (
    'seq, log_id, topic, partition, "offset", dedupe_key, event_id, event_type, account_id, effective_on,'
    " occurred_at, recorded_at, body, body_hash, chain_hash"
)
CHAIN_TYPES = ["int8", *ARCHIVE_TYPES]

ADVANCE_POSITION = """
INSERT INTO positions AS p
    (log_id, topic, partition, next_offset, applied, duplicates, dead_lettered, updated_at)
VALUES (%(log_id)s, %(topic)s, %(partition)s, %(next_offset)s, %(applied)s, %(duplicates)s,
        %(dead_lettered)s, now())
ON CONFLICT (log_id, topic, partition) DO UPDATE SET
    next_offset = excluded.next_offset,
    applied = p.applied + excluded.applied,
    duplicates = p.duplicates + excluded.duplicates,
    dead_lettered = p.dead_lettered + excluded.dead_lettered,
    updated_at = excluded.updated_at
WHERE p.next_offset = %(expected)s
RETURNING (xmax = 0) AS inserted
"""

UPSERT_ACCOUNTS = """
INSERT INTO account_snapshot (account_id, partition, state, updated_at)
SELECT u.account_id, u.partition, u.state, now()
FROM unnest(%b::text[], %b::int[], %b::bytea[]) AS u(account_id, partition, state)
ON CONFLICT (account_id) DO UPDATE SET
    partition = excluded.partition, state = excluded.state, updated_at = excluded.updated_at
"""

UPSERT_MONTH_STATES = """
INSERT INTO account_month_state (account_id, month_key, ordinal, state, findings)
SELECT * FROM unnest(%b::text[], %b::text[], %b::int[], %b::bytea[], %b::bytea[])
ON CONFLICT (account_id, month_key) DO UPDATE SET
    ordinal = excluded.ordinal, state = excluded.state, findings = excluded.findings
"""

UPSERT_MONTHS = """
INSERT INTO member_month (account_id, coverage_month, partition, expected_cents, billed_cents,
                          adjusted_cents, paid_cents, unapplied_cents, balance_cents, due_on, refunded_cents,
                          post_tax_cents, imputed_income_cents, employee_share_cents, employer_share_cents)
SELECT * FROM unnest(%b::text[], %b::date[], %b::int[], %b::bigint[], %b::bigint[], %b::bigint[],
                     %b::bigint[], %b::bigint[], %b::bigint[], %b::date[], %b::bigint[], %b::bigint[],
                     %b::bigint[], %b::bigint[], %b::bigint[])
ON CONFLICT (account_id, coverage_month) DO UPDATE SET
    partition = excluded.partition, expected_cents = excluded.expected_cents,
    billed_cents = excluded.billed_cents, adjusted_cents = excluded.adjusted_cents,
    paid_cents = excluded.paid_cents, unapplied_cents = excluded.unapplied_cents,
    balance_cents = excluded.balance_cents, due_on = excluded.due_on,
    refunded_cents = excluded.refunded_cents, post_tax_cents = excluded.post_tax_cents,
    imputed_income_cents = excluded.imputed_income_cents, employee_share_cents = excluded.employee_share_cents,
    employer_share_cents = excluded.employer_share_cents
"""

INSERT_COVERAGE = """
INSERT INTO member_coverage (account_id, segment, member_id, relationship, coverage_line, plan, tier,
                             status, begin_on, end_on, agency_id, event_id)
SELECT * FROM unnest(%b::text[], %b::int[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[],
                     %b::text[], %b::date[], %b::date[], %b::text[], %b::text[])
"""

UPSERT_PARTITION = """
INSERT INTO partition_state (partition, state) VALUES (%s, %s)
ON CONFLICT (partition) DO UPDATE SET state = excluded.state
"""

# the work on a discrepancy (processor/workflow.py), written whenever the fold changes it
WORK_COLUMNS = (
    "assignee", "work_status", "notes", "last_user", "last_reason", "last_event_id", "pending_action",
    "pending_cents", "pending_by", "pending_event_id",
)

# Set-based writes (one statement per kind of change, arrays of columns): a row per statement costs the
# client more than the fold of the event that made it. ``causes`` is each row's cause_event_ids as a JSON
# array (an array of arrays cannot be unnested); WITH ORDINALITY keeps the ids in their order.
CAUSES = "ARRAY(SELECT e FROM jsonb_array_elements_text(u.causes::jsonb) WITH ORDINALITY AS c(e, n) ORDER BY n)"
WORK_TYPES = "%b::text[], %b::text[], %b::int[], %b::text[], %b::text[], %b::text[], %b::text[], %b::bigint[]," \
              " %b::text[], %b::text[]"

# An id opened again replaces the stored row, as the in-memory store does.
OPEN_DISCREPANCY = f"""
INSERT INTO discrepancy ({DISCREPANCY_COLUMNS})
SELECT u.discrepancy_id, u.kind, u.account_id, u.coverage_month, u.payer_id, u.expected_cents, u.actual_cents,
       {CAUSES}, u.explanation, u.action, u.actor, u.status, u.opened_by, u.resolved_by, u.opened_recorded_at,
       u.resolved_recorded_at, {", ".join(f"u.{c}" for c in WORK_COLUMNS)}
FROM unnest(%b::text[], %b::text[], %b::text[], %b::date[], %b::text[], %b::bigint[], %b::bigint[], %b::text[],
            %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::timestamptz[],
            %b::timestamptz[], {WORK_TYPES})
     AS u(discrepancy_id, kind, account_id, coverage_month, payer_id, expected_cents, actual_cents, causes,
          explanation, action, actor, status, opened_by, resolved_by, opened_recorded_at, resolved_recorded_at,
          {", ".join(WORK_COLUMNS)})
ON CONFLICT (discrepancy_id) DO UPDATE SET
    kind = excluded.kind, account_id = excluded.account_id, coverage_month = excluded.coverage_month,
    payer_id = excluded.payer_id, expected_cents = excluded.expected_cents,
    actual_cents = excluded.actual_cents, cause_event_ids = excluded.cause_event_ids,
    explanation = excluded.explanation, action = excluded.action, actor = excluded.actor,
    status = excluded.status, opened_by = excluded.opened_by, resolved_by = excluded.resolved_by,
    opened_recorded_at = excluded.opened_recorded_at, resolved_recorded_at = excluded.resolved_recorded_at,
    {", ".join(f"{c} = excluded.{c}" for c in WORK_COLUMNS)}
"""

CHANGE_DISCREPANCY = f"""
UPDATE discrepancy d SET expected_cents = u.expected_cents, actual_cents = u.actual_cents,
    explanation = u.explanation, action = u.action, cause_event_ids = {CAUSES},
    {", ".join(f"{c} = u.{c}" for c in WORK_COLUMNS)}
FROM unnest(%b::bigint[], %b::bigint[], %b::text[], %b::text[], %b::text[], {WORK_TYPES}, %b::text[])
     AS u(expected_cents, actual_cents, explanation, action, causes, {", ".join(WORK_COLUMNS)}, discrepancy_id)
WHERE d.discrepancy_id = u.discrepancy_id
"""


CLOSE_DISCREPANCY = """
UPDATE discrepancy d SET status = u.status, resolved_by = u.resolved_by, resolved_recorded_at = u.recorded_at
FROM unnest(%b::text[], %b::text[], %b::timestamptz[], %b::text[])
     AS u(status, resolved_by, recorded_at, discrepancy_id)
WHERE d.discrepancy_id = u.discrepancy_id
"""

# seq follows the batch's order of the rows (the relay publishes in seq order)
INSERT_OUTBOX = """
INSERT INTO outbox (event_id, key, body, stream)
SELECT u.event_id, u.key, u.body, u.stream
FROM unnest(%b::text[], %b::text[], %b::bytea[], %b::text[]) WITH ORDINALITY AS u(event_id, key, body, stream, n)
ORDER BY u.n
"""

# The processor saw these outbox events come back (issue 12): delivered.
ECHOED = """
UPDATE outbox SET echoed_at = now()
WHERE event_id = ANY(%s::text[]) AND stream = ANY(%s::text[]) AND echoed_at IS NULL
"""


UPSERT_FSA = f"""
INSERT INTO fsa_account ({FSA_COLUMNS})
SELECT * FROM unnest(%b::text[], %b::text[], %b::int[], %b::text[], %b::bigint[], %b::bigint[], %b::bigint[],
                     %b::bigint[], %b::bigint[], %b::bigint[], %b::bool[])
ON CONFLICT (account_id, plan_year, account_type) DO UPDATE SET
    member_id = excluded.member_id, election_cents = excluded.election_cents,
    contributed_cents = excluded.contributed_cents, reimbursed_cents = excluded.reimbursed_cents,
    carryover_in_cents = excluded.carryover_in_cents, carryover_out_cents = excluded.carryover_out_cents,
    available_cents = excluded.available_cents, closed = excluded.closed
"""

ADD_PAYER_UNAPPLIED = """
INSERT INTO payer_unapplied AS p (payer_id, unapplied_cents)
SELECT * FROM unnest(%b::text[], %b::bigint[])
ON CONFLICT (payer_id) DO UPDATE SET unapplied_cents = p.unapplied_cents + excluded.unapplied_cents
"""

INSERT_DEAD_LETTER = """
INSERT INTO dead_letter (log_id, topic, partition, "offset", event_id, reason, field, key, raw, recorded_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""

DUE_ACCOUNTS = """
SELECT DISTINCT m.account_id
FROM member_month m
WHERE m.partition = %s AND m.due_on < %s AND m.paid_cents = 0
  AND m.billed_cents + m.adjusted_cents > 0
  AND NOT EXISTS (
      SELECT 1 FROM discrepancy d
      WHERE d.account_id = m.account_id AND d.coverage_month = m.coverage_month
        AND d.kind = 'missing_payment' AND d.status = 'open')
ORDER BY m.account_id
"""

CYCLE_ACCOUNTS = """
SELECT c.account_id
FROM member_coverage c JOIN account_snapshot s USING (account_id)
WHERE s.partition = %(p)s AND c.begin_on <= %(last)s AND (c.end_on IS NULL OR c.end_on >= %(first)s)
  AND NOT EXISTS (SELECT 1 FROM member_month m
                  WHERE m.account_id = c.account_id AND m.coverage_month = %(first)s AND m.billed_cents <> 0)
UNION
SELECT account_id FROM member_month WHERE partition = %(p)s AND coverage_month = %(first)s AND billed_cents = 0
ORDER BY 1
"""
