-- One row per request. See ledger/src/chain.rs for prev_hash / hash.
CREATE TABLE usage_records (
    node_id              TEXT    NOT NULL,
    seq                  INTEGER NOT NULL,
    record_id            TEXT    NOT NULL,
    time_us              INTEGER NOT NULL,
    request_id           TEXT    NOT NULL,
    tenant               TEXT,
    key_id               TEXT,
    model                TEXT    NOT NULL,
    provider             TEXT    NOT NULL,
    upstream_model       TEXT    NOT NULL,
    prompt_tokens        INTEGER NOT NULL,
    completion_tokens    INTEGER NOT NULL,
    cached_prompt_tokens INTEGER NOT NULL,
    usage_source         TEXT    NOT NULL,
    cost_micros          INTEGER NOT NULL,
    priced               INTEGER NOT NULL CHECK (priced IN (0, 1)),
    latency_ms           INTEGER NOT NULL,
    ttft_ms              INTEGER,
    http_status          INTEGER NOT NULL,
    stream               INTEGER NOT NULL CHECK (stream IN (0, 1)),
    end_state            TEXT    NOT NULL,
    prev_hash            TEXT    NOT NULL,
    hash                 TEXT    NOT NULL,
    PRIMARY KEY (node_id, seq)
);

-- Replay idempotency: a spooled record that already reached the table is skipped.
CREATE UNIQUE INDEX usage_records_record_id ON usage_records (record_id);
CREATE INDEX usage_records_time ON usage_records (time_us);
CREATE INDEX usage_records_tenant_time ON usage_records (tenant, time_us);
