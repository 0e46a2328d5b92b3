-- epoch.lua: is this the Redis server the store last ran on? If not, record a loss epoch.
--
-- Run once on every new connection of the store's client, before any other command
-- (worker/durability.py), so no claim can reach a restarted or failed-over server
-- before the epoch is recorded.
--
-- KEYS[1] server identity  payouts:server      string "run_id:master_replid"
-- KEYS[2] loss epoch       payouts:loss_epoch  hash {no, at, previous, current, detected_at}
-- KEYS[3] counts hash      payouts:counts      (exists once any order was stored)
-- ARGV[1] now              unix seconds (the caller's clock), decimal string
-- ARGV[2] margin           seconds added to ``at`` for clock skew between hosts
--
-- Returns {0, identity, no, at}  the same server (or a fresh store: identity recorded)
--         {1, identity, no, at}  another server: a loss epoch was just recorded
local server = redis.call('INFO', 'server')
local repl = redis.call('INFO', 'replication')
local run_id = string.match(server, 'run_id:(%w+)') or ''
local replid = string.match(repl, 'master_replid:(%w+)') or ''
local ident = run_id .. ':' .. replid
local cur = redis.call('GET', KEYS[1])
local function current()
  local e = redis.call('HMGET', KEYS[2], 'no', 'at')
  return {e[1] or '0', e[2] or '0'}
end
if cur == ident then
  local e = current()
  return {0, ident, e[1], e[2]}
end
if string.match(repl, 'role:(%w+)') ~= 'master' then
  -- a replica answers reads only; the store never writes through it
  local e = current()
  return {0, ident, e[1], e[2]}
end
redis.call('SET', KEYS[1], ident)
if not cur and redis.call('EXISTS', KEYS[3]) == 0 then
  local e = current()
  return {0, ident, e[1], e[2]}  -- a fresh store: nothing could have been lost
end
local no = redis.call('HINCRBY', KEYS[2], 'no', 1)
local at = string.format('%.3f', tonumber(ARGV[1]) + tonumber(ARGV[2]))
redis.call('HSET', KEYS[2], 'at', at, 'previous', cur or '', 'current', ident, 'detected_at', ARGV[1])
return {1, ident, tostring(no), at}
