-- Durable subscriptions (push services that reach devices while they are offline).
-- WebSocket subscriptions are never stored: they end with their connection.
CREATE TABLE subscriptions (
    id        TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    topic     TEXT NOT NULL,
    service   TEXT NOT NULL,
    target    TEXT NOT NULL,   -- the push service's parameters, JSON
    expires   INTEGER NOT NULL, -- unix seconds
    created   INTEGER NOT NULL, -- unix seconds
    UNIQUE (client_id, topic, service)
);
CREATE INDEX subscriptions_expires ON subscriptions (expires);
