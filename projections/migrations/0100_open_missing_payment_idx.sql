-- A business day's candidate query (DUE_ACCOUNTS in projections/postgres_sql.py) keeps the unpaid
-- months past due that have no missing_payment open yet: an anti-join from each such month to the open
-- missing_payment of the same account and month. Without an index of exactly those the planner probed
-- discrepancy_status_kind_idx and read every open missing_payment for each month, so the query's cost
-- grew with the product of the unpaid months and the open findings (both grow with history): 1,400 pages
-- a call at 84 months of the history bench. This index answers each probe with one lookup, and holds
-- only the open missing payments.
CREATE INDEX IF NOT EXISTS discrepancy_open_missing_payment_idx ON discrepancy (account_id, coverage_month)
    WHERE kind = 'missing_payment' AND status = 'open';
