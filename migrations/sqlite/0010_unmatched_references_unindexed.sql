-- Events of requests that matched no flow lose their reference index. Such requests can be sent by anyone, as fast
-- as they like, and references are random: each batch of their events landed all over the index, whose pages were
-- then written to the write-ahead log and copied into the database again, about a tenth of a failure page's cost.
-- Their references are looked up only through the API, by people, and at most `limits.unmatched_references` of them
-- are kept: a lookup reads them all, a few milliseconds at the default 100,000. The events of flows and accounts
-- keep their index in outcome_events. The rows keep their rowids, which order them for the trim.
CREATE TABLE unauthenticated_events_unindexed (
    reference          TEXT NOT NULL,
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

INSERT INTO unauthenticated_events_unindexed (rowid, reference, code, cause, class, connection, identifier, flow_id,
    error, error_description, error_uri, iss, provider_status, provider_body, detail, hint, created_at)
SELECT rowid, reference, code, cause, class, connection, identifier, flow_id, error, error_description, error_uri, iss,
    provider_status, provider_body, detail, hint, created_at
FROM unauthenticated_events ORDER BY rowid;

DROP TABLE unauthenticated_events;
ALTER TABLE unauthenticated_events_unindexed RENAME TO unauthenticated_events;
