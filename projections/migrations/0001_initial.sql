-- benefits-ledger: initial schema.
-- Applied by projections.postgres.PostgresStore.migrate() in its own transaction and recorded in
-- schema_migrations. No schema names are hard-coded: everything lands in the first schema of the
-- search_path, so a projection rebuild can migrate a fresh schema and swap it in.
-- Identifier columns use COLLATE "C" so ORDER BY matches Python's code-point string order (the
-- in-memory store's order) whatever the database locale, and comparisons stay cheap.
-- Money is always bigint cents.

-- ---------------------------------------------------------------------------------------------
-- The event archive: every applied event, in the order applied. Append-only.
CREATE TABLE archive (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    log_id       text COLLATE "C" NOT NULL,
    topic        text COLLATE "C" NOT NULL,
    partition    int NOT NULL,
    "offset"     bigint NOT NULL,
    dedupe_key   text COLLATE "C" NOT NULL,
    event_id     text COLLATE "C" NOT NULL,
    event_type   text COLLATE "C" NOT NULL,
    account_id   text COLLATE "C" NOT NULL,
    effective_on date NOT NULL,
    occurred_at  timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL,
    body         bytea NOT NULL,          -- canonical JSON bytes
    body_hash    bytea NOT NULL,          -- sha256 of body
    CONSTRAINT archive_dedupe_key_key UNIQUE (dedupe_key),
    CONSTRAINT archive_position_key UNIQUE (log_id, topic, partition, "offset")
);
CREATE INDEX archive_account_recorded_idx ON archive (account_id, recorded_at);
CREATE INDEX archive_event_id_idx ON archive (event_id);

CREATE FUNCTION archive_reject_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'archive is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER archive_no_update_delete
    BEFORE UPDATE OR DELETE ON archive
    FOR EACH ROW EXECUTE FUNCTION archive_reject_change();
CREATE TRIGGER archive_no_truncate
    BEFORE TRUNCATE ON archive
    FOR EACH STATEMENT EXECUTE FUNCTION archive_reject_change();

CREATE VIEW archive_json AS
    SELECT seq, log_id, topic, partition, "offset", dedupe_key, event_id, event_type, account_id,
           effective_on, occurred_at, recorded_at, convert_from(body, 'UTF8')::jsonb AS body, body_hash
    FROM archive;

-- ---------------------------------------------------------------------------------------------
-- Fold state snapshots (msgspec bytes), written with the projections in the same transaction.
CREATE TABLE account_snapshot (
    account_id text COLLATE "C" PRIMARY KEY,
    partition  int NOT NULL,
    state      bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE partition_state (
    partition int PRIMARY KEY,
    state     bytea NOT NULL
);

-- ---------------------------------------------------------------------------------------------
-- Projections.
-- One row per coverage segment; an account's rows are rewritten whenever its coverage changes.
-- segment keeps the fold's order of segments within the account.
CREATE TABLE member_coverage (
    account_id    text COLLATE "C" NOT NULL,
    segment       int NOT NULL,
    member_id     text COLLATE "C" NOT NULL,
    relationship  text NOT NULL,
    coverage_line text NOT NULL,
    plan          text NOT NULL,
    tier          text NOT NULL,
    status        text NOT NULL,
    begin_on      date NOT NULL,
    end_on        date,
    agency_id     text COLLATE "C" NOT NULL,
    event_id      text COLLATE "C" NOT NULL,
    PRIMARY KEY (account_id, segment)
);

CREATE TABLE member_month (
    account_id      text COLLATE "C" NOT NULL,
    coverage_month  date NOT NULL,
    partition       int NOT NULL,
    expected_cents  bigint,
    billed_cents    bigint NOT NULL,
    adjusted_cents  bigint NOT NULL,
    paid_cents      bigint NOT NULL,
    unapplied_cents bigint NOT NULL,
    balance_cents   bigint NOT NULL,
    due_on          date,
    PRIMARY KEY (account_id, coverage_month)
);
-- due_accounts(partition, due_before): billed months still wholly unpaid.
CREATE INDEX member_month_due_idx ON member_month (partition, due_on) WHERE paid_cents = 0;

CREATE TABLE payer_unapplied (
    payer_id        text COLLATE "C" PRIMARY KEY,
    unapplied_cents bigint NOT NULL
);

CREATE TABLE discrepancy (
    discrepancy_id       text COLLATE "C" PRIMARY KEY,
    kind                 text COLLATE "C" NOT NULL,
    account_id           text COLLATE "C" NOT NULL,
    coverage_month       date,
    payer_id             text COLLATE "C",
    expected_cents       bigint NOT NULL,
    actual_cents         bigint NOT NULL,
    cause_event_ids      text[] NOT NULL,
    explanation          text NOT NULL,
    action               text NOT NULL,
    actor                text NOT NULL,
    status               text NOT NULL CHECK (status IN ('open', 'resolved')),
    opened_by            text COLLATE "C" NOT NULL,
    resolved_by          text COLLATE "C",
    opened_recorded_at   timestamptz,
    resolved_recorded_at timestamptz
);
CREATE INDEX discrepancy_status_kind_idx ON discrepancy (status, kind);
CREATE INDEX discrepancy_account_idx ON discrepancy (account_id);

-- ---------------------------------------------------------------------------------------------
-- Transactional outbox for the discrepancy topic; the relay publishes rows in seq order.
CREATE TABLE outbox (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     text COLLATE "C" NOT NULL UNIQUE,
    key          text NOT NULL,
    body         bytea NOT NULL,
    published_at timestamptz
);
CREATE INDEX outbox_pending_idx ON outbox (seq) WHERE published_at IS NULL;

-- ---------------------------------------------------------------------------------------------
-- Consumer positions (the next offset to read) and counts, moved by compare-and-set per batch.
CREATE TABLE positions (
    log_id        text COLLATE "C" NOT NULL,
    topic         text COLLATE "C" NOT NULL,
    partition     int NOT NULL,
    next_offset   bigint NOT NULL,
    applied       bigint NOT NULL DEFAULT 0,
    duplicates    bigint NOT NULL DEFAULT 0,
    dead_lettered bigint NOT NULL DEFAULT 0,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (log_id, topic, partition)
);

CREATE TABLE dead_letter (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    log_id      text COLLATE "C" NOT NULL,
    topic       text COLLATE "C" NOT NULL,
    partition   int NOT NULL,
    "offset"    bigint NOT NULL,
    event_id    text COLLATE "C",
    reason      text NOT NULL,
    field       text,
    key         bytea,
    raw         bytea NOT NULL,
    recorded_at timestamptz NOT NULL,
    CONSTRAINT dead_letter_position_key UNIQUE (log_id, topic, partition, "offset")
);
