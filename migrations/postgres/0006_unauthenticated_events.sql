-- Events of requests that matched no flow and no account (a missing or forged state, a forged link) get a table of
-- their own, numbered in the order they are written. Anyone can send such requests, so only the newest are kept,
-- and the bound is kept by deleting below a number: before, each batch counted every kept event and deleted the
-- oldest through an index by time.
CREATE TABLE unauthenticated_events (
    seq                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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
    provider_status    BIGINT,
    provider_body      TEXT,
    detail             TEXT NOT NULL,
    hint               TEXT NOT NULL,
    created_at         BIGINT NOT NULL
);

INSERT INTO unauthenticated_events (reference, code, cause, class, connection, identifier, flow_id, error,
    error_description, error_uri, iss, provider_status, provider_body, detail, hint, created_at)
SELECT reference, code, cause, class, connection, identifier, flow_id, error, error_description, error_uri, iss,
    provider_status, provider_body, detail, hint, created_at
FROM outcome_events WHERE unauthenticated ORDER BY created_at;

DELETE FROM outcome_events WHERE unauthenticated;
DROP INDEX outcome_events_unauthenticated;
