-- The work queue (issue 13): people's actions on a discrepancy are events folded by
-- processor/workflow.py; the row carries the current state of that work. A person may close a
-- discrepancy as waived or written_off (with an adjustment on its month) or closed (no money moved).
ALTER TABLE discrepancy DROP CONSTRAINT IF EXISTS discrepancy_status_check;
ALTER TABLE discrepancy ADD CONSTRAINT discrepancy_status_check
    CHECK (status IN ('open', 'resolved', 'superseded', 'waived', 'written_off', 'closed'));
ALTER TABLE discrepancy ADD COLUMN IF NOT EXISTS assignee text COLLATE "C";
ALTER TABLE discrepancy ADD COLUMN IF NOT EXISTS work_status text COLLATE "C" NOT NULL DEFAULT 'open';
ALTER TABLE discrepancy ADD COLUMN IF NOT EXISTS notes int NOT NULL DEFAULT 0;
ALTER TABLE discrepancy ADD COLUMN IF NOT EXISTS last_user text COLLATE "C";
ALTER TABLE discrepancy ADD COLUMN IF NOT EXISTS last_reason text;
ALTER TABLE discrepancy ADD COLUMN IF NOT EXISTS last_event_id text COLLATE "C";
ALTER TABLE discrepancy ADD COLUMN IF NOT EXISTS pending_action text COLLATE "C";
ALTER TABLE discrepancy ADD COLUMN IF NOT EXISTS pending_cents bigint;
ALTER TABLE discrepancy ADD COLUMN IF NOT EXISTS pending_by text COLLATE "C";
ALTER TABLE discrepancy ADD COLUMN IF NOT EXISTS pending_event_id text COLLATE "C";
CREATE INDEX IF NOT EXISTS discrepancy_open_idx ON discrepancy (opened_recorded_at) WHERE status = 'open';
-- A discrepancy's history reads its account's outbox rows (the discrepancy events the ledger emitted).
CREATE INDEX IF NOT EXISTS outbox_key_idx ON outbox (key);
-- The agency of an account's discrepancies is the agency of the subscriber coverage that began last.
CREATE INDEX IF NOT EXISTS member_coverage_agency_idx ON member_coverage (account_id, relationship, begin_on);
