-- What a provider tells about the connected account besides its tokens (cloud id and site, workspace, instance URL,
-- the provider's user id and email), as a JSON object of strings. Held tokens keep theirs until they are stored.
ALTER TABLE connected_accounts ADD COLUMN metadata TEXT;
ALTER TABLE pending_verifications ADD COLUMN metadata TEXT;
