-- Replay in bounded memory (replay/stream.py) reads each partition's accounts one after another, each
-- account's events in applied order, and the partition's broadcast events (account_id '*'): both are
-- ranges of (partition, account_id, seq).
--
-- The archive belongs to ledger_archivist (projections/roles.py), so only an administrator can index it:
-- `benefits-ledger setup-roles --admin-dsn DSN` applies the migrations as the administrator (the embedded
-- stack does at every start); the ledger's own role is told so (MigrationNeedsAdmin). Built in the
-- migration's transaction, the index holds new archive rows back until it is built; on a large archive an
-- administrator may build it first with CREATE INDEX CONCURRENTLY under this name, which this then keeps.
CREATE INDEX IF NOT EXISTS archive_partition_account_seq_idx ON archive (partition, account_id, seq);
