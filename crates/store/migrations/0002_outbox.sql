-- Deliveries waiting for a retry, or queued when the Director stopped: one per subscription
-- (a newer notification replaces the older one), removed with their subscription.
CREATE TABLE outbox (
    subscription_id TEXT PRIMARY KEY REFERENCES subscriptions (id) ON DELETE CASCADE,
    topic           TEXT NOT NULL,
    sync_token      TEXT,
    trigger_kind    TEXT,
    attempt         INTEGER NOT NULL,
    due             INTEGER NOT NULL, -- unix seconds
    deadline        INTEGER NOT NULL  -- unix seconds
);
