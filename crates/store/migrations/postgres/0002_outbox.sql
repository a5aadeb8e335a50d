-- Deliveries waiting for a retry, or queued when a Director stopped: one per subscription
-- (a newer notification replaces the older one), removed with their subscription.
CREATE TABLE outbox (
    subscription_id TEXT PRIMARY KEY REFERENCES subscriptions (id) ON DELETE CASCADE,
    topic           TEXT NOT NULL,
    sync_token      TEXT,
    trigger_kind    TEXT,
    attempt         BIGINT NOT NULL,
    due             BIGINT NOT NULL, -- unix seconds
    deadline        BIGINT NOT NULL  -- unix seconds
);
