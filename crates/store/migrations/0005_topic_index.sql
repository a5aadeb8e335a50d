-- A notification reads its topic's durable targets of one push service as a range of this
-- index (issue 11), instead of one search of the primary key per subscriber.
CREATE INDEX subscriptions_topic ON subscriptions (topic, service, id);
