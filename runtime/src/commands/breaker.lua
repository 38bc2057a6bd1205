#!lua
-- One circuit breaker step for an HTTP destination, by Redis time.
-- KEYS[1] the breaker's key (`stoker:{breaker:ORIGIN}`), a hash:
--   failures (consecutive), open_until (ms), probe_until (ms), opened (count)
-- ARGV[1] op: 'check', 'success' or 'failure'; ARGV[2] failures that open it;
-- ARGV[3] cool-down (ms); ARGV[4] how long one probe call may take (ms)
-- check   -> {1, failures} go ahead (a half-open breaker lets this one call
--            through as its probe); {0, ms} open: capacity back in ms
-- success -> {1, 0}: closed again
-- failure -> {1, 0} still closed; {0, cool-down} it opened now
--@include now
local key, op = KEYS[1], ARGV[1]
local threshold, cool, probe = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local failures = tonumber(redis.call('HGET', key, 'failures') or '0')

if op == 'check' then
  if failures < threshold then return {1, failures} end
  local open_until = tonumber(redis.call('HGET', key, 'open_until') or '0')
  if now < open_until then return {0, open_until - now} end
  -- Cool-down over: half-open. One call at a time tries the destination.
  local probe_until = tonumber(redis.call('HGET', key, 'probe_until') or '0')
  if now < probe_until then return {0, math.max(1, math.min(200, probe_until - now))} end
  redis.call('HSET', key, 'probe_until', now + probe)
  return {1, failures}
elseif op == 'success' then
  if failures > 0 then
    redis.call('HSET', key, 'failures', 0, 'open_until', 0, 'probe_until', 0)
  end
  return {1, 0}
else -- failure
  failures = redis.call('HINCRBY', key, 'failures', 1)
  -- Consecutive failures are forgotten after a quiet day.
  redis.call('EXPIRE', key, 86400)
  if failures >= threshold then
    redis.call('HSET', key, 'open_until', now + cool, 'probe_until', 0)
    redis.call('HINCRBY', key, 'opened', 1)
    return {0, cool}
  end
  return {1, 0}
end
