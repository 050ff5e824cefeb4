-- account.refresh_failed is written when a refused refresh is recorded on its account (the account's last error),
-- instead of on every insert into outcome_events. A table with a trigger makes SQLite keep a statement journal for
-- each insert: every index page an outcome event touched was copied first, which was the largest single cost of
-- storing the events of failure pages. The event, its data and its transaction are the same as before.
DROP TRIGGER webhook_refresh_failed;

CREATE TRIGGER webhook_refresh_failed AFTER UPDATE OF last_error_code ON connected_accounts
WHEN NEW.last_error_code = 'token_refresh_failed' AND (SELECT enabled FROM webhook_settings WHERE id = 1)
BEGIN
    INSERT INTO webhook_outbox (id, event_type, payload, created_at, next_attempt_at)
    VALUES ('msg_' || lower(hex(randomblob(16))), 'account.refresh_failed',
            json_object('type', 'account.refresh_failed',
                        'timestamp', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
                        'data', json_object('connection', NEW.connection, 'identifier', NEW.identifier,
                                            'status', NEW.status, 'previous_status', NULL,
                                            'code', NEW.last_error_code, 'reference', NEW.last_error_reference)),
            CAST(unixepoch('subsec') * 1000 AS INTEGER), CAST(unixepoch('subsec') * 1000 AS INTEGER));
END;
