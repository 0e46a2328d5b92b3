-- lease.lua: take a bounded batch of due orders and push their due time forward,
-- so overlapping sweeps (two beats, a slow tick) never dispatch one order twice at once.
--
-- KEYS[1] due-index zset   payouts:due
-- ARGV[1] now              unix seconds
-- ARGV[2] batch            max number of ids returned
-- ARGV[3] lease_until      unix seconds: the new due time of each leased id
--
-- Returns the leased ids (oldest due first). Cost: O(log N + batch).
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1], 'XX', ARGV[3], id)
end
return ids
