-- Events of requests that matched no flow are stored a batch to a row. Such requests can be sent by anyone, as fast
-- as they like, and each event was a row of its own: a prepared statement looked up, sixteen values bound and a row
-- inserted, about a tenth of the throughput of such pages under load. Now each batch the background writer stores is
-- one row, its events as JSON Lines (one compact object per event, in the order written, each starting with its
-- `reference` key so a lookup finds it by that text), and an event costs only its serialization. Line i of a batch
-- has the sequence number first_seq + i; sequence numbers grow by one per event across batches, so keeping the newest
-- `limits.unmatched_references` deletes the batches wholly below the bound and, in the one it falls inside, counts
-- the leading lines no longer kept in `skip`. `newest_at` is the batch's latest created_at, for the 30-day
-- retention. The stored events move over in their rowid order, in batches of 2,048, the writer's largest.
CREATE TABLE unauthenticated_event_batches (
    id         INTEGER PRIMARY KEY,
    first_seq  INTEGER NOT NULL,
    last_seq   INTEGER NOT NULL,
    skip       INTEGER NOT NULL DEFAULT 0,
    newest_at  INTEGER NOT NULL,
    events     TEXT NOT NULL
);

INSERT INTO unauthenticated_event_batches (id, first_seq, last_seq, newest_at, events)
SELECT (min(seq) - 1) / 2048 + 1, min(seq), max(seq), max(created_at), group_concat(line, char(10) ORDER BY seq)
FROM (SELECT row_number() OVER (ORDER BY rowid) AS seq, created_at,
             json_object('reference', reference, 'code', code, 'cause', cause, 'class', class,
                         'connection', connection, 'identifier', identifier, 'flow_id', flow_id, 'error', error,
                         'error_description', error_description, 'error_uri', error_uri, 'iss', iss,
                         'provider_status', provider_status, 'provider_body', provider_body, 'detail', detail,
                         'hint', hint, 'created_at', created_at) AS line
      FROM unauthenticated_events)
GROUP BY (seq - 1) / 2048
ORDER BY 1;

DROP TABLE unauthenticated_events;
