-- Authorization links minted by the API. The link in the URL is `{id}.{signature}`; only the id is stored.
CREATE TABLE authorization_links (
    id          TEXT PRIMARY KEY NOT NULL,
    connection  TEXT NOT NULL,
    identifier  TEXT NOT NULL,
    return_to   TEXT,
    created_at  INTEGER NOT NULL,  -- unix milliseconds, like every time below
    expires_at  INTEGER NOT NULL
);
CREATE INDEX authorization_links_expiry ON authorization_links (expires_at);
CREATE INDEX authorization_links_identifier ON authorization_links (connection, identifier);

-- One flow per opened link: what the callback needs to validate and finish it. The state itself is never stored,
-- only its SHA-256; the PKCE verifier and nonce are sealed.
CREATE TABLE flows (
    id              TEXT PRIMARY KEY NOT NULL,
    state_hash      TEXT NOT NULL UNIQUE,
    link_id         TEXT NOT NULL,
    connection      TEXT NOT NULL,
    identifier      TEXT NOT NULL,
    browser_hash    TEXT NOT NULL,
    sealed_secrets  BLOB NOT NULL,
    return_to       TEXT,
    status          TEXT NOT NULL,  -- started, exchanging, succeeded, failed
    outcome_code    TEXT,
    reference       TEXT,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    finished_at     INTEGER
);
CREATE INDEX flows_created ON flows (created_at);
CREATE INDEX flows_identifier ON flows (connection, identifier);

CREATE TABLE connected_accounts (
    connection            TEXT NOT NULL,
    identifier            TEXT NOT NULL,
    status                TEXT NOT NULL,
    scopes                TEXT NOT NULL DEFAULT '[]',  -- JSON array
    sealed_tokens         BLOB,
    key_id                TEXT,
    token_expires_at      INTEGER,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL,
    last_error_code       TEXT,
    last_error_reference  TEXT,
    last_error_at         INTEGER,
    PRIMARY KEY (connection, identifier)
);
CREATE INDEX connected_accounts_status ON connected_accounts (status, connection, identifier);

-- What happened behind each reference id shown to a user.
CREATE TABLE outcome_events (
    reference          TEXT PRIMARY KEY NOT NULL,
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
    provider_status    INTEGER,
    provider_body      TEXT,
    detail             TEXT NOT NULL,
    hint               TEXT NOT NULL,
    created_at         INTEGER NOT NULL
);
CREATE INDEX outcome_events_created ON outcome_events (created_at);
