-- The whole schema for PostgreSQL, the same tables and meanings as migrations/sqlite (0001 to 0003 there).
-- Times are unix milliseconds (BIGINT) in both backends, so every comparison and retention reads the same.

-- Authorization links minted by the API. The link in the URL is `{id}.{signature}`; only the id is stored.
-- A link is consumed when a flow started from it connects the account: it cannot start another flow.
CREATE TABLE authorization_links (
    id           TEXT PRIMARY KEY,
    connection   TEXT NOT NULL,
    identifier   TEXT NOT NULL,
    return_to    TEXT,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    consumed_at  BIGINT
);
CREATE INDEX authorization_links_expiry ON authorization_links (expires_at);
CREATE INDEX authorization_links_identifier ON authorization_links (connection, identifier);

-- One flow per opened link: what the callback needs to validate and finish it. The state itself is never stored,
-- only its SHA-256; the PKCE verifier and nonce are sealed.
CREATE TABLE flows (
    id              TEXT PRIMARY KEY,
    state_hash      TEXT NOT NULL UNIQUE,
    link_id         TEXT NOT NULL,
    connection      TEXT NOT NULL,
    identifier      TEXT NOT NULL,
    browser_hash    TEXT NOT NULL,
    sealed_secrets  BYTEA NOT NULL,
    return_to       TEXT,
    status          TEXT NOT NULL,  -- started, exchanging, verifying, succeeded, failed
    outcome_code    TEXT,
    outcome_cause   TEXT,
    reference       TEXT,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    claimed_at      BIGINT,
    finished_at     BIGINT
);
CREATE INDEX flows_created ON flows (created_at);
CREATE INDEX flows_identifier ON flows (connection, identifier);
CREATE INDEX flows_exchanging ON flows (claimed_at) WHERE status = 'exchanging';
CREATE INDEX flows_verifying ON flows (id) WHERE status = 'verifying';

CREATE TABLE connected_accounts (
    connection            TEXT COLLATE "C" NOT NULL,  -- byte order, as in SQLite, for listing pages
    identifier            TEXT COLLATE "C" NOT NULL,
    status                TEXT NOT NULL,
    scopes                TEXT NOT NULL DEFAULT '[]',  -- JSON array
    sealed_tokens         BYTEA,
    key_id                TEXT,
    token_expires_at      BIGINT,
    created_at            BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL,
    last_error_code       TEXT,
    last_error_reference  TEXT,
    last_error_at         BIGINT,
    PRIMARY KEY (connection, identifier)
);
CREATE INDEX connected_accounts_status ON connected_accounts (status, connection, identifier);

-- What happened behind each reference id shown to a user. Events of requests that matched no flow and no link
-- (anyone can cause them) are stored as a bounded digest, and only the newest are kept.
CREATE TABLE outcome_events (
    reference          TEXT PRIMARY KEY,
    code               TEXT NOT NULL,
    cause              TEXT,
    class              TEXT NOT NULL,
    connection         TEXT,
    identifier         TEXT,
    flow_id            TEXT,
    error              TEXT,
    error_description  TEXT,
    error_uri          TEXT,
    iss                TEXT,
    provider_status    BIGINT,
    provider_body      TEXT,
    detail             TEXT NOT NULL,
    hint               TEXT NOT NULL,
    created_at         BIGINT NOT NULL,
    unauthenticated    BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX outcome_events_created ON outcome_events (created_at);
CREATE INDEX outcome_events_unauthenticated ON outcome_events (created_at) WHERE unauthenticated;

-- Tokens held after a successful exchange until the app confirms which of its users finished the flow, then
-- until the browser that consented brings the confirmation back. Only hashes of the auth_request_id and of the
-- confirmation are stored.
CREATE TABLE pending_verifications (
    request_hash       TEXT PRIMARY KEY,
    flow_id            TEXT NOT NULL,
    connection         TEXT NOT NULL,
    identifier         TEXT NOT NULL,
    scopes             TEXT NOT NULL,
    sealed_tokens      BYTEA NOT NULL,
    key_id             TEXT NOT NULL,
    token_expires_at   BIGINT,
    created_at         BIGINT NOT NULL,
    expires_at         BIGINT NOT NULL,
    confirmation_hash  TEXT UNIQUE
);
CREATE INDEX pending_verifications_expiry ON pending_verifications (expires_at);
CREATE INDEX pending_verifications_flow ON pending_verifications (flow_id);
CREATE INDEX pending_verifications_account ON pending_verifications (connection, identifier);
