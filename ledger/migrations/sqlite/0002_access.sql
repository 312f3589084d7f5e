-- Virtual keys and tenants managed through the admin API. Only a key's
-- SHA-256 is stored; `spec` is the key's or tenant's settings as JSON, in the
-- same shape as the config file's entries (validated by sluice on read).
CREATE TABLE api_keys (
    key_id      TEXT   NOT NULL PRIMARY KEY,
    tenant      TEXT   NOT NULL,
    key_sha256  TEXT   NOT NULL UNIQUE,
    spec        TEXT   NOT NULL,
    enabled     BIGINT NOT NULL,
    created_us  BIGINT NOT NULL,
    updated_us  BIGINT NOT NULL
);
CREATE INDEX api_keys_tenant ON api_keys (tenant);

CREATE TABLE tenants (
    name        TEXT   NOT NULL PRIMARY KEY,
    spec        TEXT   NOT NULL,
    created_us  BIGINT NOT NULL,
    updated_us  BIGINT NOT NULL
);
