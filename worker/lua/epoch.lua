-- epoch.lua: is this the Redis server the store last ran on? If not, record a loss epoch.
--
-- Run once on every new connection of the store's client, before any other command
-- (worker/durability.py): an early warning in the logs. The authority is the claim itself
-- (transition.lua runs the same check, D37), so a proxy that keeps connections open across
-- a failover cannot skip it. Uses store_identity/server_now from identity.lua.
--
-- KEYS[1] server identity  payouts:server      string "run_id:master_replid"
-- KEYS[2] loss epoch       payouts:loss_epoch  hash {no, at, previous, current, detected_at}
-- KEYS[3] counts hash      payouts:counts      (exists once any order was stored)
--
-- Returns {0, identity, no, at}  the same server (or a fresh store: identity recorded)
--         {1, identity, no, at}  another server: a loss epoch was just recorded
--         (``at``: the Redis server's TIME when it was recorded)
local changed, ident = store_identity(KEYS[1], KEYS[2], KEYS[3], server_now())
local e = redis.call('HMGET', KEYS[2], 'no', 'at')
return {changed, ident, e[1] or '0', e[2] or '0'}
