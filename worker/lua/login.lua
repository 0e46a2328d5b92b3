-- login.lua: take one sign-in attempt (a password or a TOTP code), or say how long to wait.
--
-- Counts attempts, not failures, so concurrent guesses cannot slip past the check; the
-- console deletes the per-user key when an attempt succeeds (the per-address one stays).
-- From the `throttle` attempt on, each next one must wait 2^(n - throttle) s (at most
-- ARGV[7]); from the `lockout` attempt on, the key is locked for ARGV[6] s.
--
-- KEYS[1] per-user hash     payouts:console:login:user:{sha256(name)} {tries, next, locked}
-- KEYS[2] per-address hash  payouts:console:login:addr:{address}      {tries, next, locked}
-- ARGV[1] now               unix seconds, decimal string
-- ARGV[2] window            seconds a key lives after its last attempt (integer)
-- ARGV[3] user throttle     integer: attempts before the per-user delay starts
-- ARGV[4] user lockout      integer: attempts that lock the user
-- ARGV[5] address factor    integer: the address's limits are the user's times this
-- ARGV[6] lockout           seconds a lock lasts (integer)
-- ARGV[7] max delay         seconds (integer)
--
-- Returns {0, "", ""}                        go ahead (the attempt is counted)
--         {seconds, "throttled"|"locked", "user"|"address"}  refused: wait that long
local now = tonumber(ARGV[1])
local window, lockout_s, max_delay = tonumber(ARGV[2]), tonumber(ARGV[6]), tonumber(ARGV[7])
local factor = tonumber(ARGV[5])
local limits = {
  {KEYS[1], tonumber(ARGV[3]), tonumber(ARGV[4]), 'user'},
  {KEYS[2], tonumber(ARGV[3]) * factor, tonumber(ARGV[4]) * factor, 'address'},
}
for _, l in ipairs(limits) do
  local h = redis.call('HMGET', l[1], 'next', 'locked')
  local locked, nxt = tonumber(h[2] or ''), tonumber(h[1] or '')
  if locked and now < locked then
    return {math.ceil(locked - now), 'locked', l[4]}
  end
  if nxt and now < nxt then
    return {math.ceil(nxt - now), 'throttled', l[4]}
  end
end
for _, l in ipairs(limits) do
  local tries = redis.call('HINCRBY', l[1], 'tries', 1)
  local ttl = window
  if tries >= l[3] then
    redis.call('HSET', l[1], 'locked', tostring(now + lockout_s))
    ttl = math.max(window, lockout_s)
  elseif tries >= l[2] then
    redis.call('HSET', l[1], 'next', tostring(now + math.min(max_delay, 2 ^ (tries - l[2]))))
  end
  redis.call('EXPIRE', l[1], ttl)
end
return {0, '', ''}
