-- The kinds of change a subscription wants: bit 0 content updates, bit 1 property updates.
ALTER TABLE subscriptions ADD COLUMN triggers INTEGER NOT NULL DEFAULT 3;
