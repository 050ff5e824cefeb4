-- The newest links of an identifier, and its newest flows still waiting for a callback, in the order the per-identifier
-- bounds keep them: trimming after a new link or flow reads at most `keep` entries, however many finished flows the
-- identifier has (before, it read every flow the identifier ever had, and a flow's start slowed down with each one).
CREATE INDEX authorization_links_newest ON authorization_links (connection, identifier, created_at DESC, id);
CREATE INDEX flows_started_newest ON flows (connection, identifier, created_at DESC, id) WHERE status = 'started';
-- Only those trims read these two; every write of a link or a flow paid for keeping them.
DROP INDEX authorization_links_identifier;
DROP INDEX flows_identifier;
