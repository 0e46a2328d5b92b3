-- claim.lua: the submit path's one round trip before the create request.
--
-- "If the order is received, take a gateway rate token and claim it (received ->
-- submitting), and hand back its fields" -- atomically, so a duplicate message, a
-- second worker or a second sweep finds it claimed and sends nothing.
--
-- KEYS[1] order hash       payouts:order:{id}
-- KEYS[2] history list     payouts:history:{id}
-- KEYS[3] due-index zset   payouts:due
-- KEYS[4] counts hash      payouts:counts
-- KEYS[5] events stream    payouts:events
-- KEYS[6] bucket hash      payouts:ratelimit           (ratelimit.lua's token bucket)
-- KEYS[7] backoff string   payouts:ratelimit:backoff   (set after a 429)
-- KEYS[8] submit queue     the broker's list of submit messages, or an unused key name
--                          when the broker is another Redis (then the backlog is 0)
-- ARGV[1] payout_cl_id     string
-- ARGV[2] now              unix seconds, decimal string
-- ARGV[3] call deadline    unix seconds: the sweep calls the claim lost after this
-- ARGV[4] rate             tokens per second; "0" = no rate limit
-- ARGV[5] burst            bucket capacity
-- ARGV[6] wait left        ms the caller may still wait for a token; when the bucket's wait
--                          is longer, the order is deferred instead (see below)
-- ARGV[7] min defer        seconds: a deferred order is due again no sooner than this
--                          (the sweep's lease) ...
--                          ... or than backlog / rate, the time the queue ahead needs
-- ARGV[8] events maxlen    integer
-- ARGV[9] sign_type        recorded on the order with the claim
-- ARGV[10] history max     integer (as transition.lua)
--
-- Returns {-1}                      no such order
--         {0, state}                not received: nothing to do (duplicate or late message)
--         {2, wait_ms}              no token yet: wait that long and call again
--         {3, deferrals, due}       no token within the wait left: the order stays received,
--                                   due again at `due`; `deferrals` counts these (no history)
--         {1, attempt, f1, v1, ...} claimed: the attempt number and the order's fields
local id, now = ARGV[1], ARGV[2]
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  return {-1}
end
if state ~= 'received' then
  return {0, state}
end

-- the rate token (same bucket and arithmetic as ratelimit.lua)
local rate = tonumber(ARGV[4])
if rate > 0 then
  local wait = redis.call('PTTL', KEYS[7])
  if wait <= 0 then
    wait = 0
    local burst = tonumber(ARGV[5])
    local t = redis.call('TIME')
    local clock = tonumber(t[1]) + tonumber(t[2]) / 1e6
    local bucket = redis.call('HMGET', KEYS[6], 'tokens', 'ts')
    local tokens = tonumber(bucket[1]) or burst
    local ts = tonumber(bucket[2]) or clock
    tokens = math.min(burst, tokens + math.max(0, clock - ts) * rate)
    if tokens >= 1 then
      tokens = tokens - 1
    else
      wait = math.ceil((1 - tokens) / rate * 1000)
    end
    redis.call('HSET', KEYS[6], 'tokens', tostring(tokens), 'ts', tostring(clock))
    redis.call('PEXPIRE', KEYS[6], math.ceil(burst / rate * 1000) + 1000)
  end
  if wait > 0 then
    if wait <= tonumber(ARGV[6]) then
      return {2, wait}
    end
    -- defer: no state change, no history, no event; one counter
    local backlog = redis.call('LLEN', KEYS[8])
    local delay = math.max(tonumber(ARGV[7]), backlog / rate)
    local due = tostring(tonumber(now) + delay)
    redis.call('ZADD', KEYS[3], 'XX', due, id)
    local n = redis.call('HINCRBY', KEYS[1], 'deferrals', 1)
    return {3, n, due}
  end
end

-- the claim: received -> submitting
local attempt = redis.call('HINCRBY', KEYS[1], 'submit_attempts', 1)
redis.call('HSET', KEYS[1], 'state', 'submitting', 'reason', 'claimed (attempt ' .. attempt .. ')',
  'updated_at', now, 'submitted_at', now, 'sign_type', ARGV[9])
redis.call('ZADD', KEYS[3], ARGV[3], id)
redis.call('HINCRBY', KEYS[4], 'received', -1)
redis.call('HINCRBY', KEYS[4], 'submitting', 1)
redis.call('PERSIST', KEYS[1])
redis.call('PERSIST', KEYS[2])
-- the history says "submitting" once: a re-claim after a quiet not-sent return writes nothing
local logged = redis.call('HGET', KEYS[1], 'hs') or 'received'
if logged == 'submitting' then
  redis.call('HDEL', KEYS[1], 'hs')
else
  if logged ~= 'received' then
    redis.call('HDEL', KEYS[1], 'hs')
  end
  local why = 'claimed (attempt ' .. attempt .. ')'
  redis.call('RPUSH', KEYS[2], cjson.encode({at = tonumber(now), from = 'received', to = 'submitting', reason = why}))
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[8], '*',
    'payout_cl_id', id, 'from', 'received', 'to', 'submitting', 'reason', why, 'at', now,
    'payout_id', redis.call('HGET', KEYS[1], 'payout_id') or '')
  local cap = tonumber(ARGV[10]) or 0
  if cap > 1 and redis.call('LLEN', KEYS[2]) > cap then
    local first = redis.call('LINDEX', KEYS[2], 0)
    redis.call('LTRIM', KEYS[2], 1 - cap, -1)
    redis.call('LPUSH', KEYS[2], first)
  end
end
local out = {1, attempt}
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields do
  out[#out + 1] = fields[i]
end
return out
