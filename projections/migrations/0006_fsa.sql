-- Flexible spending accounts (issue 8): one row per account, plan year and account type, written in the
-- batch's transaction from the fold state (processor/fsa.py decides every amount). Money is bigint cents.
CREATE TABLE fsa_account (
    account_id          text COLLATE "C" NOT NULL,
    plan_year           int NOT NULL,
    account_type        text COLLATE "C" NOT NULL CHECK (account_type IN ('health', 'dependent_care')),
    member_id           text COLLATE "C" NOT NULL,
    election_cents      bigint NOT NULL,
    contributed_cents   bigint NOT NULL,
    reimbursed_cents    bigint NOT NULL,
    carryover_in_cents  bigint NOT NULL,
    carryover_out_cents bigint NOT NULL,
    available_cents     bigint NOT NULL,
    closed              boolean NOT NULL,
    PRIMARY KEY (account_id, plan_year, account_type)
);

-- The outbox now feeds two topics: discrepancy events and FSA claim adjudications. ``stream`` names the
-- TopicSettings field the relay publishes the row to; rows written before this migration are discrepancies.
ALTER TABLE outbox ADD COLUMN stream text COLLATE "C" NOT NULL DEFAULT 'discrepancies';
