-- erase.lua: remove a final order's personal fields; keep everything else.
--
-- KEYS[1] order hash       payouts:order:{id}
-- KEYS[2] erase index zset payouts:pii:erase (id -> time its personal fields are due to go)
-- ARGV[1] payout_cl_id     string
-- ARGV[2] states           ",succeeded,failed,rejected," the states an erasure may apply to
-- ARGV[3] now              unix seconds, decimal string (erased_at)
-- ARGV[4] reason           short text kept as erased_reason (no personal data)
-- ARGV[5..] fields         the personal fields to delete (sealed values, masks, fingerprint)
--
-- The state is read and the fields deleted in one script, so an order that left its final
-- state (a late report moved it to review) is never erased half-way.
--
-- Returns {1, state} when erased (or already erased: idempotent),
--         {0, state} when the order is not in one of ARGV[2] (left in the index: ZREM'd),
--         {-1, ""}   when the order does not exist (its record expired: ZREM'd).
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return {-1, ''}
end
if not string.find(ARGV[2], ',' .. state .. ',', 1, true) then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return {0, state}
end
local fields = {}
for i = 5, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
redis.call('HDEL', KEYS[1], unpack(fields))
if redis.call('HEXISTS', KEYS[1], 'erased_at') == 0 then
  redis.call('HSET', KEYS[1], 'erased_at', ARGV[3], 'erased_reason', ARGV[4])
end
redis.call('ZREM', KEYS[2], ARGV[1])
return {1, state}
