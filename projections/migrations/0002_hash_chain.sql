-- benefits-ledger: tamper evidence and the auditor role (issue 4).
-- No schema names are hard-coded (see 0001).
--
-- archive.chain_hash = sha256(previous chain_hash of the partition || body_hash || sha256(fields)), the
-- first event of a partition chaining to 32 zero bytes; fields are every column but seq, joined by
-- 0x1f, times as microseconds since the epoch (projections/chain.py is the reference; a test checks
-- that this SQL and the Python agree). PostgresStore.commit_batch computes it for new rows;
-- archive_chain_head holds each partition's last link, locked by the writer for the length of its
-- transaction, so two workers can never fork a partition's chain.

ALTER TABLE archive ADD COLUMN chain_hash bytea;
CREATE INDEX archive_partition_seq_idx ON archive (partition, seq);
-- replay --known-at R: per partition, the last event recorded at or before R
CREATE INDEX archive_partition_recorded_idx ON archive (partition, recorded_at, seq);

CREATE TABLE archive_chain_head (
    partition  int PRIMARY KEY,
    chain_hash bytea NOT NULL
);

CREATE FUNCTION archive_chain_link(previous bytea, a archive) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT sha256(previous || a.body_hash || sha256(convert_to(concat_ws(E'\x1f',
        a.log_id, a.topic, a.partition::text, a."offset"::text, a.dedupe_key, a.event_id, a.event_type,
        a.account_id, to_char(a.effective_on, 'YYYY-MM-DD'),
        (extract(epoch FROM a.occurred_at) * 1000000)::bigint::text,
        (extract(epoch FROM a.recorded_at) * 1000000)::bigint::text), 'UTF8')))
$$;

-- Rows archived before this migration get their links now (the append-only trigger is lifted for
-- this one transaction only).
ALTER TABLE archive DISABLE TRIGGER archive_no_update_delete;
DO $$
DECLARE
    r archive;
    h bytea;
    heads jsonb := '{}';
BEGIN
    FOR r IN SELECT * FROM archive ORDER BY seq LOOP
        h := archive_chain_link(
            coalesce(decode(heads ->> r.partition::text, 'hex'), '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea),
            r);
        UPDATE archive SET chain_hash = h WHERE seq = r.seq;
        heads := jsonb_set(heads, ARRAY[r.partition::text], to_jsonb(encode(h, 'hex')));
    END LOOP;
    INSERT INTO archive_chain_head (partition, chain_hash)
    SELECT key::int, decode(value, 'hex') FROM jsonb_each_text(heads);
END;
$$;
ALTER TABLE archive ENABLE TRIGGER archive_no_update_delete;
ALTER TABLE archive ALTER COLUMN chain_hash SET NOT NULL;

-- The auditor: reads everything, changes nothing. Roles belong to the server, not the database, so
-- the role is created once; a ledger user that may not create roles skips it (an administrator can
-- create ledger_auditor and run the grants below).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ledger_auditor') THEN
        BEGIN
            CREATE ROLE ledger_auditor NOLOGIN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN NULL;  -- created meanwhile by another database
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'ledger_auditor not created: this user may not create roles';
        END;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ledger_auditor') THEN
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO ledger_auditor', current_schema());
        EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO ledger_auditor', current_schema());
        EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT ON TABLES TO ledger_auditor',
                       current_schema());
    END IF;
END;
$$;
