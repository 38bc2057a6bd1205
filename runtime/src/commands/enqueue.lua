#!lua
-- Enqueue one job: its record and its place in the pending list (or the
-- scheduled set when it is due later), in one atomic step.
-- KEYS[1] pending list, KEYS[2] scheduled set, KEYS[3] job record,
-- ARGV[1] payload, ARGV[2] id, ARGV[3] class, ARGV[4] queue, ARGV[5] args (JSON)
-- ARGV[6] delay in ms (0 = now), ARGV[7] due time in ms since the epoch (0 = use the delay)
-- ARGV[8] this request's nonce, kept on the record ('' for none)
-- KEYS[4] (unique and collapsible jobs) the key; ARGV[9] its TTL (ms), ARGV[10]
-- 'start' or 'success' (unique: until when the key is held) or 'collapse'
-- (latest wins: the key's pending holder is marked superseded by this job)
-- Returns {state, due_ms}, or {'duplicate', holder id} when a unique key is
-- held. Refuses an id that already has a record, unless the record carries
-- this request's nonce: the same request run twice (on Redis Cluster,
-- redis-rs sends a request again when its connection dropped before the
-- reply) gets the first run's answer and changes nothing.
--@include wake
--@include now
local nonce = ARGV[8]
if redis.call('EXISTS', KEYS[3]) == 1 then
  if nonce ~= '' then
    local held = redis.call('HMGET', KEYS[3], 'enqueue_nonce', 'enqueued_at', 'due_at')
    if held[1] == nonce then
      local due = tonumber(held[3])
      if due > tonumber(held[2]) then return {'scheduled', due} end
      return {'queued', due}
    end
  end
  return redis.error_reply('DUPLICATE a job with id ' .. ARGV[2] .. ' already exists')
end
if KEYS[4] and ARGV[10] == 'collapse' then
  local holder = redis.call('GET', KEYS[4])
  if holder and holder ~= ARGV[2] then
    -- The job record keys share a prefix: this one's minus this id.
    local old = string.sub(KEYS[3], 1, #KEYS[3] - #ARGV[2]) .. holder
    -- Only a job that has not started is superseded (its worker drops it).
    if redis.call('EXISTS', old) == 1 and redis.call('HEXISTS', old, 'ran') == 0 then
      redis.call('HSET', old, 'collapsed_by', ARGV[2])
    end
  end
  redis.call('SET', KEYS[4], ARGV[2], 'PX', ARGV[9])
elseif KEYS[4] then
  local holder = redis.call('GET', KEYS[4])
  if holder then return {'duplicate', holder} end
  redis.call('SET', KEYS[4], ARGV[2], 'PX', ARGV[9])
  redis.call('HSET', KEYS[3], 'unique_key', KEYS[4], 'unique_until', ARGV[10])
end
local due = tonumber(ARGV[7])
if due == 0 then due = now + tonumber(ARGV[6]) end
local state = 'queued'
if due > now then
  state = 'scheduled'
  redis.call('ZADD', KEYS[2], due, ARGV[1])
else
  wake(KEYS[1], redis.call('LPUSH', KEYS[1], ARGV[1]))
end
if nonce ~= '' then redis.call('HSET', KEYS[3], 'enqueue_nonce', nonce) end
redis.call('HSET', KEYS[3], 'id', ARGV[2], 'class', ARGV[3], 'queue', ARGV[4], 'args', ARGV[5],
  'state', state, 'attempts', 0, 'enqueued_at', now, 'due_at', due)
return {state, due}
