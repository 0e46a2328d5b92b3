-- rekey.lua: replace an order's sealed fields with the same data sealed under the newest key,
-- only if none of them changed since they were read (compare-and-set: safe while workers run).
--
-- KEYS[1] order hash       payouts:order:{id}
-- ARGV[1..] triples        field, value read, new value
--
-- A read value of "" means "the field was absent when read".
--
-- Returns 1 when every field was replaced, 0 when any field changed (or the order is gone):
-- nothing is written then, and the caller reads the order again.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
for i = 1, #ARGV, 3 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i]) or ''
  if cur ~= ARGV[i + 1] then
    return 0
  end
end
for i = 1, #ARGV, 3 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])
end
return 1
