-- bulk_load.lua (bench only): write many order records in the store's layout at once.
--
-- Builds key names from prefixes, so it is for a private, single-node bench Redis only.
--
-- KEYS[1] due-index zset   payouts:due
-- KEYS[2] counts hash      payouts:counts
-- ARGV[1] order key prefix "payouts:order:"
-- ARGV[2] history prefix   "payouts:history:"
-- ARGV[3] id prefix        string; order i is id prefix .. zero-padded i
-- ARGV[4] first index      integer
-- ARGV[5] count            integer (keep it <= ~20,000: the call blocks Redis meanwhile)
-- ARGV[6] due_at           unix seconds, the due-index score of every order
-- ARGV[7] state            the state written (also counted in the counts hash)
-- ARGV[8] history          the order's history entries, joined by "\n" (JSON each)
-- ARGV[9] payout_id prefix string; payout_id is this prefix .. the padded index
-- ARGV[10..] field, value  the rest of the order hash (template; same for every order)
--
-- Returns the number of orders written.
local oprefix, hprefix, idprefix = ARGV[1], ARGV[2], ARGV[3]
local first, count, due, state = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], ARGV[7]
local history = {}
for entry in string.gmatch(ARGV[8], '[^\n]+') do
  history[#history + 1] = entry
end
local fields = {'state', state, 'payout_cl_id', '', 'payout_id', ''}
for i = 10, #ARGV, 2 do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
end
for n = first, first + count - 1 do
  local id = idprefix .. string.format('%09d', n)
  fields[4] = id
  fields[6] = ARGV[9] .. string.format('%09d', n)
  redis.call('HSET', oprefix .. id, unpack(fields))
  if #history > 0 then
    redis.call('RPUSH', hprefix .. id, unpack(history))
  end
  redis.call('ZADD', KEYS[1], due, id)
end
redis.call('HINCRBY', KEYS[2], state, count)
return count
