-- Conversation state for OpenAI's Responses API (`previous_response_id`) on
-- upstreams that do not keep it themselves: each stored response's items
-- (the conversation so far, its input and its output) as a JSON array,
-- visible only to the tenant that made it, until `expires_us`.
CREATE TABLE stored_responses (
    response_id TEXT   NOT NULL PRIMARY KEY,
    tenant      TEXT,
    items       TEXT   NOT NULL,
    created_us  BIGINT NOT NULL,
    expires_us  BIGINT NOT NULL
);
CREATE INDEX stored_responses_expires ON stored_responses (expires_us);
