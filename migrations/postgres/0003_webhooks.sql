-- Webhooks from a durable outbox, as migrations/sqlite/0005_webhooks.sql: triggers write each event in the same
-- transaction as the change that causes it; a background worker delivers each at least once.

CREATE TABLE webhook_settings (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    enabled  BOOLEAN NOT NULL
);
INSERT INTO webhook_settings (id, enabled) VALUES (1, FALSE);

CREATE TABLE webhook_outbox (
    id               TEXT PRIMARY KEY,
    event_type       TEXT NOT NULL,
    payload          TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending',
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    last_status      INTEGER,
    last_error       TEXT,
    lease            TEXT,
    lease_until      BIGINT,
    delivered_at     BIGINT
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_outbox_listing ON webhook_outbox (created_at, id);

-- Writes one event, when webhooks are enabled. `json` (not `jsonb`) keeps the keys in the order given.
CREATE FUNCTION callback_gate_webhook_event(kind TEXT, data JSON) RETURNS VOID AS $$
DECLARE
    now_ms BIGINT := (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT;
BEGIN
    IF EXISTS (SELECT 1 FROM webhook_settings WHERE id = 1 AND enabled) THEN
        INSERT INTO webhook_outbox (id, event_type, payload, created_at, next_attempt_at)
        VALUES ('msg_' || md5(random()::TEXT || clock_timestamp()::TEXT), kind,
                json_build_object('type', kind,
                                  'timestamp', to_char(clock_timestamp() AT TIME ZONE 'UTC',
                                                       'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                                  'data', data)::TEXT,
                now_ms, now_ms);
    END IF;
END
$$ LANGUAGE plpgsql;

CREATE FUNCTION callback_gate_account_event() RETURNS TRIGGER AS $$
BEGIN
    IF TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM NEW.status THEN
        PERFORM callback_gate_webhook_event('account.status_changed',
            json_build_object('connection', NEW.connection, 'identifier', NEW.identifier, 'status', NEW.status,
                              'previous_status', CASE WHEN TG_OP = 'INSERT' THEN NULL ELSE OLD.status END,
                              'code', NULL, 'reference', NULL));
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER webhook_account AFTER INSERT OR UPDATE OF status ON connected_accounts
    FOR EACH ROW EXECUTE FUNCTION callback_gate_account_event();

CREATE FUNCTION callback_gate_flow_event() RETURNS TRIGGER AS $$
BEGIN
    IF NEW.status = 'failed' AND OLD.status IS DISTINCT FROM 'failed' THEN
        PERFORM callback_gate_webhook_event('flow.failed',
            json_build_object('connection', NEW.connection, 'identifier', NEW.identifier, 'status', NULL,
                              'previous_status', NULL, 'code', NEW.outcome_code, 'reference', NEW.reference));
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER webhook_flow AFTER UPDATE OF status ON flows
    FOR EACH ROW EXECUTE FUNCTION callback_gate_flow_event();

CREATE FUNCTION callback_gate_refresh_event() RETURNS TRIGGER AS $$
BEGIN
    IF NEW.code = 'token_refresh_failed' AND NEW.connection IS NOT NULL AND NEW.identifier IS NOT NULL THEN
        PERFORM callback_gate_webhook_event('account.refresh_failed',
            json_build_object('connection', NEW.connection, 'identifier', NEW.identifier,
                              'status', (SELECT status FROM connected_accounts a
                                         WHERE a.connection = NEW.connection AND a.identifier = NEW.identifier),
                              'previous_status', NULL, 'code', NEW.code, 'reference', NEW.reference));
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER webhook_refresh AFTER INSERT ON outcome_events
    FOR EACH ROW EXECUTE FUNCTION callback_gate_refresh_event();
