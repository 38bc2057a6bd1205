#!lua
-- Returns every job in a dead worker's in-flight list to the front of the
-- pending list (they are fetched next, oldest first), clearing its lease so a
-- late commit from the lost attempt is refused. A job recovered ARGV[2] times
-- in a row without reaching a checkpoint (or a retry) is taking its workers
-- down with it: it goes to the dead set as `poison` instead. A crash is no
-- failed attempt: it counts in `recovered` and `crashes`, never in the
-- record's `failures` (settle.lua), and a poison job's error is the record's own.
-- KEYS[1] the dead worker's in-flight list, KEYS[2] pending list, KEYS[3] dead set,
-- KEYS[4] batch outbox (a poison job of a batch is added: `BATCH ID dead`)
-- ARGV[1] job record key prefix, ARGV[2] recoveries that make a job poison,
-- ARGV[3] dead record TTL (s), ARGV[4] snapshot key prefix, ARGV[5] the dead
-- worker's id, ARGV[6..] (optional) the payloads to take back, each once:
-- then the worker is alive and found them in its list, running nowhere (their
-- settlement or fetch was lost, see worker/reconcile.rs). Those go back the
-- same way, each only if it is still there, but no crash was seen: they
-- count in `recovered`, not in `crashes`.
-- Returns {jobs recovered, jobs found poison}.
--@include ident
--@include wake
--@include now
local poison_after, dead_ttl = tonumber(ARGV[2]), tonumber(ARGV[3])
local n, poisoned = 0, 0
-- `payload` was just moved to the front of the pending list; `crashed`: its
-- worker died.
local function back(payload, crashed)
  n = n + 1
  local id, token = ident(payload)
  local key = id and (ARGV[1] .. id)
  local held = key and redis.call('HMGET', key, 'state', 'worker', 'token')
  -- Only the job's own copy, running on this worker, is the job: a duplicate
  -- the worker had taken (fetch.lua) goes back as it is, its record untouched,
  -- and is found a duplicate again.
  if not (held and held[1] == 'running' and held[2] == ARGV[5] and (held[3] or '0') == token) then
    return
  end
  redis.call('HINCRBY', key, 'recovered', 1)
  local crashes = crashed and redis.call('HINCRBY', key, 'crashes', 1) or 0
  if crashed and crashes >= poison_after then
    redis.call('RPOP', KEYS[2])
    redis.call('ZADD', KEYS[3], now, id)
    redis.call('HSET', key, 'state', 'dead', 'lease', '', 'finished_at', now,
      'payload', payload, 'error_kind', 'poison', 'backtrace', '',
      'error_message', 'poison: the job was running on ' .. crashes ..
      ' workers that died (killed, out of memory, crashed) without reaching a checkpoint')
    redis.call('EXPIRE', key, dead_ttl)
    redis.call('EXPIRE', ARGV[4] .. id, dead_ttl)
    local batch = redis.call('HGET', key, 'batch')
    if batch then redis.call('SADD', KEYS[4], batch .. ' ' .. id .. ' dead') end
    poisoned = poisoned + 1
  else
    redis.call('HSET', key, 'state', 'queued', 'lease', '')
  end
end
if #ARGV > 5 then
  for i = 6, #ARGV do
    if redis.call('LREM', KEYS[1], 1, ARGV[i]) == 1 then
      redis.call('RPUSH', KEYS[2], ARGV[i])
      back(ARGV[i], false)
    end
  end
else
  while true do
    local payload = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
    if not payload then break end
    back(payload, true)
  end
end
-- The workers idle on the queue fetch the recovered jobs at once.
if n > poisoned then announce(KEYS[2]) end
return {n, poisoned}
