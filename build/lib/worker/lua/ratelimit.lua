-- ratelimit.lua: a token bucket shared by every worker process.
--
-- KEYS[1] bucket hash      payouts:ratelimit  (fields: tokens, ts)
-- KEYS[2] backoff string   payouts:ratelimit:backoff (set after a 429; PTTL = pause left)
-- ARGV[1] rate             tokens per second (float > 0)
-- ARGV[2] burst            bucket capacity (float >= 1)
--
-- Returns milliseconds to wait before trying again; 0 means a token was taken.
local pause = redis.call('PTTL', KEYS[2])
if pause > 0 then
  return pause
end
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return wait
