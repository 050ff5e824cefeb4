-- A link is consumed when a flow started from it connects the account: it cannot start another flow.
ALTER TABLE authorization_links ADD COLUMN consumed_at INTEGER;

-- When a callback claimed the flow, so a claim whose callback never finished (the process stopped mid-exchange)
-- can be ended instead of waiting forever; and the cause of a failed flow, so its page is rebuilt exactly even
-- when its outcome event could not be stored.
ALTER TABLE flows ADD COLUMN claimed_at INTEGER;
ALTER TABLE flows ADD COLUMN outcome_cause TEXT;
-- Partial, so a flow enters each index only while it waits on a callback or an answer: most flows pass through
-- them with one insert and one delete, not an update at every step.
CREATE INDEX flows_exchanging ON flows (claimed_at) WHERE status = 'exchanging';
CREATE INDEX flows_verifying ON flows (id) WHERE status = 'verifying';

-- User verification in two steps: the app confirms its user (confirmation_hash is set), then the browser that
-- consented brings the confirmation back to the service. Only the confirmation's hash is stored.
ALTER TABLE pending_verifications ADD COLUMN confirmation_hash TEXT;
CREATE UNIQUE INDEX pending_verifications_confirmation ON pending_verifications (confirmation_hash);
CREATE INDEX pending_verifications_flow ON pending_verifications (flow_id);

-- Outcome events of requests that matched no flow and no link: anyone can cause them, so they are stored as a
-- bounded digest and only the newest are kept.
ALTER TABLE outcome_events ADD COLUMN unauthenticated INTEGER NOT NULL DEFAULT 0;
CREATE INDEX outcome_events_unauthenticated ON outcome_events (created_at) WHERE unauthenticated = 1;
