-- The notifier (processor/notifier.py): a subscriber of the discrepancy topic in its own consumer group.
-- Like the processor it keeps its positions in PostgreSQL, written in the same transaction as what the
-- records changed, so a restart neither loses nor double-counts an action. Not derived from the
-- archive: a projection rebuild copies these tables as they are.

-- Where the notifier is in each partition of the discrepancy topic (the truth; Kafka's committed
-- offsets only feed lag monitoring).
CREATE TABLE notifier_position (
    consumer_group text COLLATE "C" NOT NULL,
    topic          text COLLATE "C" NOT NULL,
    partition      int NOT NULL,
    next_offset    bigint NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

-- Every discrepancy as the topic told it: opened, amounts changed, resolved or superseded.
CREATE TABLE notifier_action (
    discrepancy_id text COLLATE "C" PRIMARY KEY,
    account_id     text COLLATE "C" NOT NULL,
    payer_id       text COLLATE "C",
    kind           text NOT NULL,
    coverage_month date,
    expected_cents bigint NOT NULL,
    actual_cents   bigint NOT NULL,
    explanation    text NOT NULL,
    action         text NOT NULL,
    actor          text NOT NULL,
    status         text NOT NULL,          -- open | resolved | superseded
    last_event_id  text COLLATE "C" NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notifier_action_open_idx ON notifier_action (payer_id, actor) WHERE status = 'open';

-- What was sent: one digest per coordinator (agency) and day, with the actions it listed. The key
-- keeps it to one a day; the row is the record of the message the coordinator received.
CREATE TABLE notifier_digest (
    agency_id       text COLLATE "C" NOT NULL,
    digest_on       date NOT NULL,
    recipient       text NOT NULL,
    message_id      text NOT NULL,
    discrepancy_ids text[] NOT NULL,
    total_due_cents bigint NOT NULL,
    sent_at         timestamptz NOT NULL,
    PRIMARY KEY (agency_id, digest_on)
);
