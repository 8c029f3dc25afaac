-- An account's fold state is stored as its header (account_snapshot.state: everything but the months)
-- and one row per month here, so a batch writes only the months it changed, not the account's whole
-- history (processor/state.py encode_header, projections/fold_state.py changed_months). ``ordinal`` is the
-- month's place in the account (months are only added, at the end): a load keeps their order.
--
-- Snapshots written before this migration still hold their months in account_snapshot.state. They are
-- read as they are, and the first write of such an account stores every month here and a header
-- without them (processor/state.py UNSPLIT): no rewrite of the table at upgrade.
CREATE TABLE account_month_state (
    account_id text COLLATE "C" NOT NULL,
    month_key  text COLLATE "C" NOT NULL,
    ordinal    int NOT NULL,
    state      bytea NOT NULL,
    PRIMARY KEY (account_id, month_key)
);
