-- transition.lua: the one compare-and-set through which every order changes.
--
-- "If the state is one of FROM, move to TO, set these fields, update the
-- due-index, the counts, the history and the events stream" -- atomically.
--
-- KEYS[1] order hash       payouts:order:{id}
-- KEYS[2] history list     payouts:history:{id}
-- KEYS[3] due-index zset   payouts:due
-- KEYS[4] counts hash      payouts:counts
-- KEYS[5] events stream    payouts:events
-- KEYS[6] review zset      payouts:review
-- KEYS[7] tombstones hash  payouts:ids (written on a final state for orders stored before it existed)
-- KEYS[8] open-since zset  payouts:open (id -> time it became open; open states only)
-- KEYS[9] metrics hash     payouts:metrics:transitions ("from|to" -> count)
-- KEYS[10] metrics hash    payouts:metrics:time_to_final ("state|le", "state|sum", "state|count")
-- KEYS[11] approvals zset  payouts:approvals (id -> time it entered awaiting_approval; the
--                          console's approvals queue, read a page at a time)
-- KEYS[12] results switch  payouts:results: present (value: RESULT_REDELIVER_AFTER seconds)
--                          while the workers publish RESULT_TASK; a move into a final state
--                          then writes result_pending=1 and keeps the order due that long
--                          (the sweep re-sends), whatever the calling process's settings (D44)
-- KEYS[13] loss epoch      payouts:loss_epoch (optional; the claim passes it with KEYS[14])
-- KEYS[14] server identity payouts:server: the claim first runs store_identity (identity.lua:
--                          a restart or failover since the last write records a loss epoch,
--                          D37), then refuses an order stamped (create.lua ``ep``) with an
--                          older epoch number until its ``epoch_checked`` names the current
--                          one; numbers, not clocks (D36). An order without ``ep`` (stored by
--                          an older version) counts as epoch 0.
-- ARGV[1] payout_cl_id     string
-- ARGV[2] from             comma-separated states allowed now (",a,b," form)
-- ARGV[3] to               target state; "" = keep the state (update fields/due only)
-- ARGV[4] now              "" = the Redis server's TIME (production); else unix seconds (tests
--                          and benchmarks simulating time, or a sweep already on TIME)
-- ARGV[5] due              "" = leave the due-index alone, "-" = remove, "r<seconds>" = that
--                          long after now, else unix seconds
-- ARGV[6] reason           short text for the history and the event
-- ARGV[7] events maxlen    integer
-- ARGV[8] retention        seconds the keys live once final ("0" = forever)
-- ARGV[9] expect field     "" = none; else the CAS also requires HGET(field) == ARGV[10]
-- ARGV[10] expect value    string; "\0" = the field must be absent
-- ARGV[11] quiet           "1" = move the state without a history entry or an event (a
--                          not-sent return to received); the state as last written to the
--                          history is kept in field "hs" until the next logged move, which
--                          first writes the catch-up entry hs -> current
-- ARGV[12] history max     integer: the history list keeps its first entry and the last ones
-- ARGV[13..] field, value  pairs set on the order; value "\0" deletes the field,
--                          "\1" increments it by one (HINCRBY; the new value is returned),
--                          "\2<seconds>" is now + seconds (stamped; "\2" alone: now)
--
-- Rules every caller gets (issue 19):
-- * final means final (D38): an order that reached a final state (field ``fin``, written by
--   the move into it: that move's event published it) moves to ``received`` only when the
--   pairs carry ``override_by`` and ``override_approved_by``, two different non-empty names
--   (a second person), which stay on the order and in the history entry's reason; the
--   override clears ``fin`` (that send's own later moves are ordinary; a new final sets it);
-- * the approval deadline (D52): awaiting_approval -> received only before ``approval_until``
--   (the Redis server's clock).
--
-- Returns {1, previous state[, incremented value]}  applied
--         {0, current state}   refused: state (or expect field) does not match
--         {-1, ""}             no such order
--         {-2, state, epoch no, epoch at}  refused: the loss-epoch guard (KEYS[13]) holds it
--         {-3, state}          refused: a published final state needs a second person's override
--         {-4, state}          refused: the approval deadline has passed
local id, to, due, reason = ARGV[1], ARGV[3], ARGV[5], ARGV[6]
local t = ARGV[4] == '' and server_now() or tonumber(ARGV[4])
local now = stamp(t)
if string.sub(due, 1, 1) == 'r' then
  due = string.format('%.6f', t + tonumber(string.sub(due, 2)))
end
-- upper bounds (seconds) of the enqueue-to-final histogram; worker/metrics.py TIME_TO_FINAL_BUCKETS
local TTF_BUCKETS = {1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400}
-- worker/states.py OPEN (tests/store/test_metrics.py checks they agree)
local OPEN_STATES = {received = true, submitting = true, accepted = true, unconfirmed = true, awaiting_approval = true}
local cur = redis.call('HGET', KEYS[1], 'state')
if not cur then
  return {-1, ''}
end
if not string.find(ARGV[2], ',' .. cur .. ',', 1, true) then
  return {0, cur}
end
if ARGV[9] ~= '' then
  local have = redis.call('HGET', KEYS[1], ARGV[9])
  if ARGV[10] == '\0' then
    if have then
      return {0, cur}
    end
  elseif have ~= ARGV[10] then
    return {0, cur}
  end
end
local clear_fin = false
if to == 'received' and to ~= cur then
  local fin = redis.call('HGET', KEYS[1], 'fin')
  if fin or cur == 'succeeded' or cur == 'failed' or cur == 'rejected' then
    clear_fin = true -- overridden (below): later moves of this send are ordinary ones
    local by, second = nil, nil
    for i = 13, #ARGV, 2 do
      if ARGV[i] == 'override_by' then
        by = ARGV[i + 1]
      elseif ARGV[i] == 'override_approved_by' then
        second = ARGV[i + 1]
      end
    end
    if not by or not second or by == '' or second == '' or by == second then
      return {-3, cur}
    end
  end
  if cur == 'awaiting_approval' then
    local untl = tonumber(redis.call('HGET', KEYS[1], 'approval_until') or '')
    if untl and t >= untl then
      return {-4, cur}
    end
  end
end
if KEYS[13] then
  store_identity(KEYS[14], KEYS[13], KEYS[4], t)
  local ep = redis.call('HMGET', KEYS[13], 'no', 'at')
  if ep[1] and tonumber(ep[1]) > 0 then
    local o = redis.call('HMGET', KEYS[1], 'ep', 'epoch_checked')
    if tonumber(o[1] or '0') < tonumber(ep[1]) and o[2] ~= ep[1] then
      return {-2, cur, ep[1], ep[2] or '0'}
    end
  end
end
local quiet = ARGV[11] == '1'
local set, del, incr = {'updated_at', now}, {}, nil
for i = 13, #ARGV, 2 do
  if ARGV[i + 1] == '\0' then
    del[#del + 1] = ARGV[i]
  elseif ARGV[i + 1] == '\1' then
    incr = ARGV[i]
  elseif string.sub(ARGV[i + 1], 1, 1) == '\2' then
    set[#set + 1] = ARGV[i]
    set[#set + 1] = stamp(t + (tonumber(string.sub(ARGV[i + 1], 2)) or 0))
  else
    set[#set + 1] = ARGV[i]
    set[#set + 1] = ARGV[i + 1]
  end
end
local final = to == 'succeeded' or to == 'failed' or to == 'rejected'
local owed = nil
if to ~= '' and to ~= cur then
  set[#set + 1] = 'state'
  set[#set + 1] = to
  set[#set + 1] = 'reason'
  set[#set + 1] = reason
  if final then
    set[#set + 1] = 'fin'
    set[#set + 1] = to
    owed = tonumber(redis.call('GET', KEYS[12]) or '')
    if owed then
      set[#set + 1] = 'result_pending'
      set[#set + 1] = '1'
      due = string.format('%.6f', t + owed)
    end
  end
end
redis.call('HSET', KEYS[1], unpack(set))
if clear_fin then
  del[#del + 1] = 'fin'
end
if #del > 0 then
  redis.call('HDEL', KEYS[1], unpack(del))
end
local incremented = nil
if incr then
  incremented = redis.call('HINCRBY', KEYS[1], incr, 1)
end
if due == '-' then
  redis.call('ZREM', KEYS[3], id)
elseif due ~= '' then
  redis.call('ZADD', KEYS[3], due, id)
end
-- the open-since index: an order enters it when it becomes open, leaves it when it stops
local changed = to ~= '' and to ~= cur
if OPEN_STATES[changed and to or cur] then
  if changed or due ~= '' then
    redis.call('ZADD', KEYS[8], 'NX', now, id)
  end
elseif changed then
  redis.call('ZREM', KEYS[8], id)
end
if to ~= '' and to ~= cur then
  redis.call('HINCRBY', KEYS[4], cur, -1)
  redis.call('HINCRBY', KEYS[4], to, 1)
  -- the state the history (and the events stream) last said
  local logged = redis.call('HGET', KEYS[1], 'hs') or cur
  if quiet then
    if logged == to then
      redis.call('HDEL', KEYS[1], 'hs')
    else
      redis.call('HSET', KEYS[1], 'hs', logged)
    end
  else
    local payout_id = redis.call('HGET', KEYS[1], 'payout_id') or ''
    local function log(src, dst, why)
      redis.call('RPUSH', KEYS[2], cjson.encode({at = tonumber(now), from = src, to = dst, reason = why}))
      redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[7], '*',
        'payout_cl_id', id, 'from', src, 'to', dst, 'reason', why, 'at', now, 'payout_id', payout_id)
    end
    if logged ~= cur then
      redis.call('HDEL', KEYS[1], 'hs')
      if logged ~= to then
        log(logged, cur, 'not sent (attempts counted in not_sent)')
      end
    end
    if logged ~= to then
      log(logged ~= cur and cur or logged, to, reason)
    end
    local cap = tonumber(ARGV[12]) or 0
    if cap > 1 and redis.call('LLEN', KEYS[2]) > cap then
      local first = redis.call('LINDEX', KEYS[2], 0)
      redis.call('LTRIM', KEYS[2], 1 - cap, -1)
      redis.call('LPUSH', KEYS[2], first)
    end
  end
  if to == 'review' then
    redis.call('ZADD', KEYS[6], now, id)
  elseif cur == 'review' then
    redis.call('ZREM', KEYS[6], id)
  end
  if to == 'awaiting_approval' then
    redis.call('ZADD', KEYS[11], now, id)
  elseif cur == 'awaiting_approval' then
    redis.call('ZREM', KEYS[11], id)
  end
  -- metrics: O(1) each, in the same atomic step (docs/operating.md, "Metrics")
  redis.call('HINCRBY', KEYS[9], cur .. '|' .. to, 1)
  local created = final and tonumber(redis.call('HGET', KEYS[1], 'created_at') or '')
  if created then
    local dt = math.max(0, tonumber(now) - created)
    local le = '+Inf'
    for _, b in ipairs(TTF_BUCKETS) do
      if dt <= b then
        le = tostring(b)
        break
      end
    end
    redis.call('HINCRBY', KEYS[10], to .. '|' .. le, 1)
    redis.call('HINCRBYFLOAT', KEYS[10], to .. '|sum', dt)
    redis.call('HINCRBY', KEYS[10], to .. '|count', 1)
  end
  local retention = tonumber(ARGV[8])
  if final and retention > 0 then
    redis.call('HSETNX', KEYS[7], id, string.match(redis.call('HGET', KEYS[1], 'created_at') or now, '^%d+') or now)
    redis.call('EXPIRE', KEYS[1], retention)
    redis.call('EXPIRE', KEYS[2], retention)
  else
    redis.call('PERSIST', KEYS[1])
    redis.call('PERSIST', KEYS[2])
  end
end
if incremented then
  return {1, cur, incremented}
end
return {1, cur}
