-- Each outbox row is held by one node for a lease (`owner`: a token per running store handle,
-- `lease_until`: unix seconds); a row with no owner or an ended lease is claimed by any node.
ALTER TABLE outbox ADD COLUMN owner TEXT;
ALTER TABLE outbox ADD COLUMN lease_until INTEGER NOT NULL DEFAULT 0;
-- The VAPID keys, shared by every process on the database: the advertised one (`retired` NULL,
-- the newest if several) and the retired ones still bound to subscriptions.
CREATE TABLE vapid_keys (
    id      TEXT PRIMARY KEY,
    pem     TEXT NOT NULL,
    created INTEGER NOT NULL,
    retired INTEGER
);
