-- Subscription ids compare byte by byte, whatever the database's collation: the store's
-- contract orders a topic's targets by id as the Director orders them (Rust's string order),
-- so that a big topic's targets can be read as ranges side by side (issue 11). A collation
-- such as en_US.UTF-8 orders "a-b", "ab" and "B" otherwise. Ids are opaque ASCII; "C" is
-- also the cheapest comparison. The indexes on `id` are rebuilt once.
ALTER TABLE outbox ALTER COLUMN subscription_id SET DATA TYPE TEXT COLLATE "C";
ALTER TABLE subscriptions ALTER COLUMN id SET DATA TYPE TEXT COLLATE "C";
