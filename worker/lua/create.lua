-- create.lua: store a new order in state "received", unless the id exists.
--
-- KEYS[1] order hash       payouts:order:{id}
-- KEYS[2] history list     payouts:history:{id}
-- KEYS[3] due-index zset   payouts:due
-- KEYS[4] counts hash      payouts:counts
-- KEYS[5] events stream    payouts:events
-- KEYS[6] tombstones hash  payouts:ids (id -> unix seconds it was first stored; never expires)
-- KEYS[7] open-since zset  payouts:open (id -> time it became open)
-- KEYS[8] metrics hash     payouts:metrics:transitions ("from|to" -> count; "|received" here)
-- KEYS[9] submit queue     the broker's list of submit messages (or a key that never exists)
-- KEYS[10] server identity payouts:server (identity.lua)
-- KEYS[11] loss epoch      payouts:loss_epoch: the order is stamped ``ep`` = its number (0 if
--                          none), so the claim's guard compares numbers, never clocks (D36)
-- ARGV[1] payout_cl_id     string
-- ARGV[2] fingerprint      string, digest of the order's data (duplicate detection)
-- ARGV[3] now              "" = the Redis server's TIME (always, in production); else unix
--                          seconds (tests and benchmarks that simulate time)
-- ARGV[4] due_at           when the sweep re-drives it if no worker claimed it: "r<seconds>"
--                          = that long after now, else unix seconds
-- ARGV[5] events maxlen    integer, approximate cap of the events stream
-- ARGV[6] rate             GATEWAY_MAX_RPS ("0" = none): the order's message waits behind the
--                          queued ones, so the re-drive time is pushed back by queued / rate
--                          (a long import is not re-driven while its messages wait, D17)
-- ARGV[7..] field, value   pairs stored in the order hash
--
-- Returns {1, "received", due, created_at, ep} when created (due: the re-drive time as stored),
--         {0, existing fingerprint, existing state} when the id already exists,
--         {0, "", "expired"} when the id was stored once and its order has expired
--         (ids are never reused: the tombstone outlives ORDER_RETENTION_DAYS).
if redis.call('EXISTS', KEYS[1]) == 1 then
  local cur = redis.call('HMGET', KEYS[1], 'fp', 'state')
  return {0, cur[1] or '', cur[2] or ''}
end
local id = ARGV[1]
local t = ARGV[3] == '' and server_now() or tonumber(ARGV[3])
local now = stamp(t)
if redis.call('HSETNX', KEYS[6], id, string.match(now, '^%d+') or now) == 0 then
  return {0, '', 'expired'}
end
-- a restart or failover since the last write is recorded before the order is stamped
store_identity(KEYS[10], KEYS[11], KEYS[4], t)
local ep = redis.call('HGET', KEYS[11], 'no') or '0'
-- short names and no updated_at until the first change: bytes per order add up
local fields = {'state', 'received', 'fp', ARGV[2], 'created_at', now, 'ep', ep}
for i = 7, #ARGV, 2 do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
end
redis.call('HSET', KEYS[1], unpack(fields))
local due
if string.sub(ARGV[4], 1, 1) == 'r' then
  due = t + tonumber(string.sub(ARGV[4], 2))
else
  due = tonumber(ARGV[4])
end
local rate = tonumber(ARGV[6])
if rate > 0 then
  due = due + redis.call('LLEN', KEYS[9]) / rate
end
redis.call('ZADD', KEYS[3], due, id)
redis.call('HINCRBY', KEYS[4], 'received', 1)
redis.call('ZADD', KEYS[7], now, id)
redis.call('HINCRBY', KEYS[8], '|received', 1)
redis.call('RPUSH', KEYS[2], cjson.encode({at = tonumber(now), from = '', to = 'received', reason = 'enqueued'}))
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[5], '*',
  'payout_cl_id', id, 'from', '', 'to', 'received', 'reason', 'enqueued', 'at', now, 'payout_id', '')
return {1, 'received', redis.call('ZSCORE', KEYS[3], id), now, ep}
