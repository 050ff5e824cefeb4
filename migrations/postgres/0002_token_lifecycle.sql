-- The token lifecycle, as migrations/sqlite/0004_token_lifecycle.sql: refreshes before expiry, one at a time per
-- account across instances (a lease row), and writes conditional on the token version they were computed from.
ALTER TABLE connected_accounts ADD COLUMN token_version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE connected_accounts ADD COLUMN refresh_lease TEXT;
ALTER TABLE connected_accounts ADD COLUMN refresh_lease_until BIGINT;
ALTER TABLE connected_accounts ADD COLUMN refresh_due_at BIGINT;
ALTER TABLE connected_accounts ADD COLUMN refresh_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE connected_accounts ADD COLUMN missing_scopes TEXT;
CREATE INDEX connected_accounts_refresh_due ON connected_accounts (refresh_due_at) WHERE refresh_due_at IS NOT NULL;
UPDATE connected_accounts SET refresh_due_at = token_expires_at * 1000 - 300000
 WHERE status = 'ACTIVE' AND token_expires_at IS NOT NULL;

ALTER TABLE pending_verifications ADD COLUMN refresh_due_at BIGINT;
