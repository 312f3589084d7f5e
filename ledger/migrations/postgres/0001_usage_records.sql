-- One row per request. See ledger/src/chain.rs for prev_hash / hash.
-- Flags are BIGINT 0/1 rather than BOOLEAN so both backends share one set of
-- queries through sqlx's Any driver.
CREATE TABLE usage_records (
    node_id              TEXT   NOT NULL,
    seq                  BIGINT NOT NULL,
    record_id            TEXT   NOT NULL,
    time_us              BIGINT NOT NULL,
    request_id           TEXT   NOT NULL,
    tenant               TEXT,
    key_id               TEXT,
    model                TEXT   NOT NULL,
    provider             TEXT   NOT NULL,
    upstream_model       TEXT   NOT NULL,
    prompt_tokens        BIGINT NOT NULL,
    completion_tokens    BIGINT NOT NULL,
    cached_prompt_tokens BIGINT NOT NULL,
    usage_source         TEXT   NOT NULL,
    cost_micros          BIGINT NOT NULL,
    priced               BIGINT NOT NULL CHECK (priced IN (0, 1)),
    latency_ms           BIGINT NOT NULL,
    ttft_ms              BIGINT,
    http_status          BIGINT NOT NULL,
    stream               BIGINT NOT NULL CHECK (stream IN (0, 1)),
    end_state            TEXT   NOT NULL,
    prev_hash            TEXT   NOT NULL,
    hash                 TEXT   NOT NULL,
    PRIMARY KEY (node_id, seq)
);

-- Replay idempotency: a spooled record that already reached the table is skipped.
CREATE UNIQUE INDEX usage_records_record_id ON usage_records (record_id);
CREATE INDEX usage_records_time ON usage_records (time_us);
CREATE INDEX usage_records_tenant_time ON usage_records (tenant, time_us);
