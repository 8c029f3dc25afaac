-- The workbench's people and their sessions' bookkeeping (processor/entrypoints/web/auth.py).
-- Passwords are argon2id hashes; API tokens are stored as the SHA-256 of their random secret.
CREATE TABLE IF NOT EXISTS web_user (
    login         text COLLATE "C" PRIMARY KEY CHECK (login ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    display_name  text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 100),
    role          text COLLATE "C" NOT NULL
                  CHECK (role IN ('specialist', 'supervisor', 'auditor', 'agency_coordinator')),
    agency_id     text COLLATE "C",
    password_hash text NOT NULL,
    active        boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT web_user_agency_of_coordinators CHECK ((role = 'agency_coordinator') = (agency_id IS NOT NULL))
);

CREATE TABLE IF NOT EXISTS web_api_token (
    token_id   text COLLATE "C" PRIMARY KEY,
    secret_sha256 bytea NOT NULL,
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    role       text COLLATE "C" NOT NULL
               CHECK (role IN ('specialist', 'supervisor', 'auditor', 'agency_coordinator')),
    agency_id  text COLLATE "C",
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    CONSTRAINT web_api_token_agency_of_coordinators CHECK ((role = 'agency_coordinator') = (agency_id IS NOT NULL))
);

-- Failed logins within the throttling window (older rows are deleted as new ones arrive).
CREATE TABLE IF NOT EXISTS web_login_failure (
    login     text COLLATE "C" NOT NULL,
    remote    text COLLATE "C" NOT NULL,
    failed_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS web_login_failure_login_idx ON web_login_failure (login, failed_at);
CREATE INDEX IF NOT EXISTS web_login_failure_remote_idx ON web_login_failure (remote, failed_at);

-- Every form a person submitted: its token (a double submit is the same row and the same event), the
-- event published and its canonical bytes, so the page can show it pending until the ledger applied it.
CREATE TABLE IF NOT EXISTS web_submission (
    token           text COLLATE "C" PRIMARY KEY,
    event_id        text COLLATE "C" NOT NULL UNIQUE,
    event_type      text COLLATE "C" NOT NULL,
    account_id      text COLLATE "C" NOT NULL,
    discrepancy_id  text COLLATE "C",
    login           text COLLATE "C" NOT NULL,
    body            bytea NOT NULL,
    submitted_at    timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS web_submission_account_idx ON web_submission (account_id, submitted_at);
