-- Events of requests that matched no flow and no account (a missing or forged state, a forged link) get a table of
-- their own. Anyone can send such requests, so only the newest are kept; here they lie in the order they were
-- written and the bound is kept by deleting below a rowid: no count of the kept events, and no index to maintain
-- but the reference's. In outcome_events, each batch counted the kept events through a partial index and kept two
-- indexes by time as well, about a third of the cost of storing a failure page's event.
CREATE TABLE unauthenticated_events (
    reference          TEXT NOT NULL UNIQUE,
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

INSERT INTO unauthenticated_events (reference, code, cause, class, connection, identifier, flow_id, error,
    error_description, error_uri, iss, provider_status, provider_body, detail, hint, created_at)
SELECT reference, code, cause, class, connection, identifier, flow_id, error, error_description, error_uri, iss,
    provider_status, provider_body, detail, hint, created_at
FROM outcome_events WHERE unauthenticated = 1 ORDER BY created_at, rowid;

DELETE FROM outcome_events WHERE unauthenticated = 1;
DROP INDEX outcome_events_unauthenticated;
