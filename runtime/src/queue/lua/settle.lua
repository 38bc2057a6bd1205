-- Settles a batch of jobs one worker took from one queue: each leaves the
-- worker's in-flight list and goes where its outcome sends it, and its record is
-- updated, in one atomic step. A job no longer in the in-flight list was
-- recovered from this worker (its heartbeat expired) and now belongs to another
-- attempt: it is left alone and counted in the reply.
-- KEYS[1] in-flight list, KEYS[2] pending list, KEYS[3] retry set, KEYS[4] dead set, KEYS[5] stats hash
-- ARGV[1] job record key prefix, ARGV[2] dead set cap, ARGV[3] done record TTL (s),
-- ARGV[4] dead record TTL (s), ARGV[5] number of jobs,
-- then per job: payload, id, action, arg, next payload, field count, field, value, ...
--   done:    result recorded; record expires after the done TTL
--   retry:   next payload into the retry set, due in arg ms
--   dead:    id into the dead set (capped: the oldest records are dropped)
--   requeue: next payload back to the pending list; arg 'front' (fetched next) or 'back'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prefix, cap = ARGV[1], tonumber(ARGV[2])
local done_ttl, dead_ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local i, lost = 6, 0
for _ = 1, tonumber(ARGV[5]) do
  local payload, id, action, arg, next_payload = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local nfields = tonumber(ARGV[i + 5])
  local fields = {}
  for f = 1, nfields * 2 do fields[f] = ARGV[i + 5 + f] end
  i = i + 6 + nfields * 2
  if redis.call('LREM', KEYS[1], 1, payload) == 0 then
    lost = lost + 1
  else
    local key = prefix .. id
    if nfields > 0 then redis.call('HSET', key, unpack(fields)) end
    if action == 'done' then
      redis.call('HSET', key, 'state', 'done', 'finished_at', now)
      redis.call('EXPIRE', key, done_ttl)
      redis.call('HINCRBY', KEYS[5], 'processed', 1)
    elseif action == 'retry' then
      local due = now + tonumber(arg)
      redis.call('ZADD', KEYS[3], due, next_payload)
      redis.call('HSET', key, 'state', 'retrying', 'finished_at', now, 'due_at', due)
      redis.call('HINCRBY', KEYS[5], 'failed', 1)
    elseif action == 'dead' then
      redis.call('ZADD', KEYS[4], now, id)
      redis.call('HSET', key, 'state', 'dead', 'finished_at', now, 'payload', next_payload)
      redis.call('EXPIRE', key, dead_ttl)
      redis.call('HINCRBY', KEYS[5], 'failed', 1)
      redis.call('HINCRBY', KEYS[5], 'dead', 1)
      local excess = redis.call('ZCARD', KEYS[4]) - cap
      if excess > 0 then
        local popped = redis.call('ZPOPMIN', KEYS[4], excess)
        for k = 1, #popped, 2 do -- member, score, member, score, ...
          redis.call('DEL', prefix .. popped[k])
        end
      end
    elseif action == 'requeue' then
      if arg == 'front' then
        redis.call('RPUSH', KEYS[2], next_payload)
      else
        redis.call('LPUSH', KEYS[2], next_payload)
      end
      if redis.call('EXISTS', key) == 1 then redis.call('HSET', key, 'state', 'queued') end
    end
  end
end
return lost
