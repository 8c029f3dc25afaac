-- Refunds issued for a coverage month (a credit paid back); balance = billed + adjusted - paid + refunded.
ALTER TABLE member_month ADD COLUMN IF NOT EXISTS refunded_cents bigint NOT NULL DEFAULT 0;
