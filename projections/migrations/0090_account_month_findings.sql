-- A month's row also holds the discrepancies about that month, open and closed by a person
-- (processor/state.py MonthFindings; NULL: none), so the account's header does not grow with the
-- findings of the months behind it.
--
-- Headers written before this migration still hold every finding. They are read as they are, and the
-- first write of such an account stores the findings of each of its months in that month's row
-- (processor/state.py FINDINGS_IN_HEADER): no rewrite of the table at upgrade.
ALTER TABLE account_month_state ADD COLUMN findings bytea;
