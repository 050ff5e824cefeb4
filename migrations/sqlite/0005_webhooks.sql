-- Webhooks from a durable outbox. Every event is written by a trigger in the same transaction as the change that
-- causes it, whichever operation makes the change, so none is lost and none is sent for a change that rolled back.
-- A background worker delivers each at least once (see src/webhooks.rs).

-- Whether webhooks are configured: each instance sets it at start-up. Without it, no event is written.
CREATE TABLE webhook_settings (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    enabled  INTEGER NOT NULL
);
INSERT INTO webhook_settings (id, enabled) VALUES (1, 0);

CREATE TABLE webhook_outbox (
    id               TEXT PRIMARY KEY NOT NULL,   -- msg_…: the webhook-id, the same on every attempt
    event_type       TEXT NOT NULL,
    payload          TEXT NOT NULL,               -- the JSON body, exactly as signed and sent
    created_at       INTEGER NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending',  -- pending, delivered, failed
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    last_status      INTEGER,                     -- the receiver's HTTP status at the last attempt
    last_error       TEXT,                        -- why the last attempt failed, when the receiver did not answer 2xx
    lease            TEXT,                        -- the delivery attempt running now, and until when it may run
    lease_until      INTEGER,
    delivered_at     INTEGER
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_outbox_listing ON webhook_outbox (created_at, id);

-- An account was created (its first status) or its status changed.
CREATE TRIGGER webhook_account_created AFTER INSERT ON connected_accounts
WHEN (SELECT enabled FROM webhook_settings WHERE id = 1)
BEGIN
    INSERT INTO webhook_outbox (id, event_type, payload, created_at, next_attempt_at)
    VALUES ('msg_' || lower(hex(randomblob(16))), 'account.status_changed',
            json_object('type', 'account.status_changed',
                        'timestamp', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
                        'data', json_object('connection', NEW.connection, 'identifier', NEW.identifier,
                                            'status', NEW.status, 'previous_status', NULL,
                                            'code', NULL, 'reference', NULL)),
            CAST(unixepoch('subsec') * 1000 AS INTEGER), CAST(unixepoch('subsec') * 1000 AS INTEGER));
END;

CREATE TRIGGER webhook_account_status AFTER UPDATE OF status ON connected_accounts
WHEN OLD.status IS NOT NEW.status AND (SELECT enabled FROM webhook_settings WHERE id = 1)
BEGIN
    INSERT INTO webhook_outbox (id, event_type, payload, created_at, next_attempt_at)
    VALUES ('msg_' || lower(hex(randomblob(16))), 'account.status_changed',
            json_object('type', 'account.status_changed',
                        'timestamp', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
                        'data', json_object('connection', NEW.connection, 'identifier', NEW.identifier,
                                            'status', NEW.status, 'previous_status', OLD.status,
                                            'code', NULL, 'reference', NULL)),
            CAST(unixepoch('subsec') * 1000 AS INTEGER), CAST(unixepoch('subsec') * 1000 AS INTEGER));
END;

-- A flow ended in failure: its code and reference, never the provider's text.
CREATE TRIGGER webhook_flow_failed AFTER UPDATE OF status ON flows
WHEN NEW.status = 'failed' AND OLD.status IS NOT 'failed' AND (SELECT enabled FROM webhook_settings WHERE id = 1)
BEGIN
    INSERT INTO webhook_outbox (id, event_type, payload, created_at, next_attempt_at)
    VALUES ('msg_' || lower(hex(randomblob(16))), 'flow.failed',
            json_object('type', 'flow.failed',
                        'timestamp', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
                        'data', json_object('connection', NEW.connection, 'identifier', NEW.identifier,
                                            'status', NULL, 'previous_status', NULL,
                                            'code', NEW.outcome_code, 'reference', NEW.reference)),
            CAST(unixepoch('subsec') * 1000 AS INTEGER), CAST(unixepoch('subsec') * 1000 AS INTEGER));
END;

-- A refresh was refused or failed: recorded under a reference for an account.
CREATE TRIGGER webhook_refresh_failed AFTER INSERT ON outcome_events
WHEN NEW.code = 'token_refresh_failed' AND NEW.connection IS NOT NULL AND NEW.identifier IS NOT NULL
     AND (SELECT enabled FROM webhook_settings WHERE id = 1)
BEGIN
    INSERT INTO webhook_outbox (id, event_type, payload, created_at, next_attempt_at)
    VALUES ('msg_' || lower(hex(randomblob(16))), 'account.refresh_failed',
            json_object('type', 'account.refresh_failed',
                        'timestamp', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
                        'data', json_object('connection', NEW.connection, 'identifier', NEW.identifier,
                                            'status', (SELECT status FROM connected_accounts a
                                                       WHERE a.connection = NEW.connection
                                                         AND a.identifier = NEW.identifier),
                                            'previous_status', NULL,
                                            'code', NEW.code, 'reference', NEW.reference)),
            CAST(unixepoch('subsec') * 1000 AS INTEGER), CAST(unixepoch('subsec') * 1000 AS INTEGER));
END;
