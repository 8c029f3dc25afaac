-- When each outbox row was written, so operators can see how old the relay's backlog is
-- (ledger_outbox_oldest_age_seconds). Rows written before this migration count from now.
ALTER TABLE outbox ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX outbox_pending_created_idx ON outbox (created_at) WHERE published_at IS NULL;
