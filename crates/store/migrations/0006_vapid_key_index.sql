-- The VAPID key each Web Push subscription is bound to, indexed as the key queries read it:
-- listing the keys in use and binding rows that have none, at every start, no longer parse
-- the JSON of every Web Push row (issue 11: 1.2 s of a million's start-up).
CREATE INDEX subscriptions_vapid_key ON subscriptions (service, json_extract(target, '$.vapid_key'))
WHERE service IN ('web_push', 'unified_push');
