-- identity.lua: shared functions, prepended to create.lua, transition.lua and epoch.lua
-- when they are loaded (worker/store.py ``script_text``). Not run on its own.
--
-- server_now()        the Redis server's clock (TIME) in unix seconds: the one clock the
--                     store compares times with (due, lease, created, loss epoch), D35/D36
-- stamp(t)            a time as stored: millisecond precision, "%.3f"
-- store_identity(kserver, kepoch, kcounts, now)
--                     is this the server the store last ran on ("run_id:master_replid")?
--                     If not (a restart, a failover), record a loss epoch: HINCRBY no,
--                     HSET at/previous/current/detected_at = now. A fresh store (no orders,
--                     no identity) records only its identity; a replica records nothing.
--                     Returns changed (0/1), identity. Runs inside the claim itself (D37),
--                     so no connection lifecycle can skip it.
local function server_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function stamp(t)
  return string.format('%.3f', t)
end
local function store_identity(kserver, kepoch, kcounts, now)
  local server = redis.call('INFO', 'server')
  local repl = redis.call('INFO', 'replication')
  local run_id = string.match(server, 'run_id:(%w+)') or ''
  local replid = string.match(repl, 'master_replid:(%w+)') or ''
  local ident = run_id .. ':' .. replid
  local cur = redis.call('GET', kserver)
  if cur == ident or string.match(repl, 'role:(%w+)') ~= 'master' then
    return 0, ident -- the same server, or a replica (answers reads only)
  end
  redis.call('SET', kserver, ident)
  if not cur and redis.call('EXISTS', kcounts) == 0 then
    return 0, ident -- a fresh store: nothing could have been lost
  end
  redis.call('HINCRBY', kepoch, 'no', 1)
  redis.call('HSET', kepoch, 'at', stamp(now), 'previous', cur or '', 'current', ident, 'detected_at', stamp(now))
  return 1, ident
end
