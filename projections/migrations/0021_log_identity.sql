-- Issue 12: a replaced log with the same identity. The log id of positions and archive rows is the
-- broker's cluster id, but a broker restarted with the same cluster id (Tansu's memory storage) or a
-- topic deleted and recreated on Kafka keeps that id while its records are new. Each input topic's
-- topic id (from the broker's metadata) is recorded the first time the ledger reads it under a log;
-- a different id later stops the processor (processor/logid.py).
CREATE TABLE IF NOT EXISTS log_topic (
    log_id      text COLLATE "C" NOT NULL,
    topic       text COLLATE "C" NOT NULL,
    topic_id    text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (log_id, topic)
);

-- `benefits-ledger accept-log` continues on a replaced log as a new log of the same cluster: the old
-- log id is retired (its positions and archive rows stay as they are) and the new one starts at
-- offset 0 of every partition, where re-sent events count as duplicates. No row for a cluster: its log
-- id is the cluster id itself.
CREATE TABLE IF NOT EXISTS log_epoch (
    log_id     text COLLATE "C" PRIMARY KEY,
    cluster_id text COLLATE "C" NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    retired_at timestamptz,
    reason     text
);
CREATE UNIQUE INDEX IF NOT EXISTS log_epoch_current_idx ON log_epoch (cluster_id) WHERE retired_at IS NULL;
