#!lua
-- One decision of a distributed limiter, by Redis time, in one step.
-- KEYS[1] the limiter's key (`stoker:{limiter:NAME}`)
-- ARGV[1] op: 'acquire' or 'release', ARGV[2] kind: 'concurrent', 'rate' or
-- 'window', ARGV[3] limit, ARGV[4] period (ms), ARGV[5] burst, ARGV[6] holder
-- lease (ms), ARGV[7] holder id, ARGV[8] (rate) how long the caller would
-- wait for a reserved turn (ms; 0: no reservation)
-- Returns {granted (1/0), ms}: denied, the ms until capacity is expected back;
-- granted, 0, or (a reserved turn of a rate limiter) the ms to wait before
-- using it.
--@include now
local op, kind = ARGV[1], ARGV[2]
local limit, period, burst, lease = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]),
  tonumber(ARGV[6])
local key, holder = KEYS[1], ARGV[7]

if kind == 'concurrent' then
  if op == 'release' then
    redis.call('ZREM', key, holder)
    return {1, 0}
  end
  -- Holders are scored by when their lease runs out: a dead worker's slot
  -- comes back by itself.
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZSCORE', key, holder) or redis.call('ZCARD', key) < limit then
    redis.call('ZADD', key, now + lease, holder)
    redis.call('PEXPIRE', key, lease * 2)
    return {1, 0}
  end
  -- A holder usually gives its slot back long before its lease runs out: ask
  -- again soon rather than at the lease's end.
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return {0, math.max(1, math.min(200, tonumber(first[2]) - now))}
elseif kind == 'rate' then
  if op == 'release' then return {1, 0} end
  -- GCRA: one emission every period/limit; up to `burst` at once.
  local interval = period / limit
  local tat = math.max(tonumber(redis.call('GET', key) or now), now)
  local allow_at = tat - interval * burst
  local wait = 0
  if allow_at > now - interval then
    wait = math.ceil(allow_at + interval - now)
    -- Too far off to wait for: come back then. Close enough: the turn is
    -- reserved, so waiters queue up in order instead of racing for each one.
    if wait > tonumber(ARGV[8] or '0') then return {0, math.max(1, wait)} end
  end
  redis.call('SET', key, string.format('%.0f', tat + interval), 'PX', math.ceil(period * 2 + interval * burst + wait))
  return {1, math.max(0, wait)}
else -- window
  if op == 'release' then return {1, 0} end
  local start = now - now % period
  local wkey = key .. ':' .. start
  local n = redis.call('INCR', wkey)
  if n == 1 then redis.call('PEXPIRE', wkey, period * 2) end
  if n > limit then
    return {0, math.max(1, start + period - now)}
  end
  return {1, 0}
end
