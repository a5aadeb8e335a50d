-- Durable subscriptions (push services that reach devices while they are offline), shared by
-- every Director node of a cluster. WebSocket subscriptions are never stored.
CREATE TABLE subscriptions (
    id        TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    topic     TEXT NOT NULL,
    service   TEXT NOT NULL,
    target    TEXT NOT NULL,   -- the push service's parameters, JSON
    expires   BIGINT NOT NULL, -- unix seconds
    created   BIGINT NOT NULL, -- unix seconds
    triggers  SMALLINT NOT NULL DEFAULT 3, -- bit 0 content updates, bit 1 property updates
    UNIQUE (client_id, topic, service)
);
CREATE INDEX subscriptions_expires ON subscriptions (expires);
