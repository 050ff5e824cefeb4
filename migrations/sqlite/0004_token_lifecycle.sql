-- The token lifecycle: refreshes before expiry, one at a time per account, and writes that only land on the
-- tokens they were computed from.
--
-- token_version increases with every write of an account's tokens or status (a flow, a refresh, a disconnect),
-- so a refresh that read version N writes only while the account is still at N. refresh_lease and
-- refresh_lease_until say which refresh (in any process) holds the account's one refresh, until when; a lease
-- whose holder died ends by itself. refresh_due_at (unix ms) is when the background refresher should renew the
-- tokens, and refresh_failures counts transient failures in a row, for backoff. missing_scopes is a JSON array
-- of the scopes the provider said an API call lacked.
ALTER TABLE connected_accounts ADD COLUMN token_version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE connected_accounts ADD COLUMN refresh_lease TEXT;
ALTER TABLE connected_accounts ADD COLUMN refresh_lease_until INTEGER;
ALTER TABLE connected_accounts ADD COLUMN refresh_due_at INTEGER;
ALTER TABLE connected_accounts ADD COLUMN refresh_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE connected_accounts ADD COLUMN missing_scopes TEXT;
CREATE INDEX connected_accounts_refresh_due ON connected_accounts (refresh_due_at) WHERE refresh_due_at IS NOT NULL;
-- Accounts connected before: due five minutes before their token expires (token_expires_at is unix seconds).
UPDATE connected_accounts SET refresh_due_at = token_expires_at * 1000 - 300000
 WHERE status = 'ACTIVE' AND token_expires_at IS NOT NULL;

-- Held tokens carry when they will be due, computed when they were issued.
ALTER TABLE pending_verifications ADD COLUMN refresh_due_at INTEGER;
