-- Issue 12: an outbox row the ledger reads back itself (a payment it posts, stream 'payments') counts
-- as delivered only when the processor has seen its event come back (applied, a duplicate or a dead
-- letter): echoed_at, set in the transaction of the batch that saw it. published_log_id is the log the
-- relay published it on: after a broker loss (the ledger on a new log) the relay publishes every row
-- that has not come back again.
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS published_log_id text;
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS echoed_at timestamptz;
-- Rows of a ledger migrated now: what the archive or the dead letters already hold has come back.
UPDATE outbox o SET echoed_at = coalesce(o.published_at, now())
WHERE o.stream = 'payments' AND o.echoed_at IS NULL
  AND (EXISTS (SELECT 1 FROM archive a WHERE a.event_id = o.event_id)
       OR EXISTS (SELECT 1 FROM dead_letter d WHERE d.event_id = o.event_id));
CREATE INDEX IF NOT EXISTS outbox_undelivered_idx ON outbox (seq) WHERE stream = 'payments' AND echoed_at IS NULL;
