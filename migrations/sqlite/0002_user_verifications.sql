-- Tokens held after a successful exchange until the app confirms which of its users finished the flow.
-- The auth_request_id sent to the app is stored only as a hash.
CREATE TABLE pending_verifications (
    request_hash      TEXT PRIMARY KEY NOT NULL,
    flow_id           TEXT NOT NULL,
    connection        TEXT NOT NULL,
    identifier        TEXT NOT NULL,
    scopes            TEXT NOT NULL,
    sealed_tokens     BLOB NOT NULL,
    key_id            TEXT NOT NULL,
    token_expires_at  INTEGER,
    created_at        INTEGER NOT NULL,
    expires_at        INTEGER NOT NULL
);
CREATE INDEX pending_verifications_expiry ON pending_verifications (expires_at);
