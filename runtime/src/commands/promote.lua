#!lua
-- Moves jobs whose time has come (by Redis time) from a scheduled or retry set
-- to the back of the pending list.
-- KEYS[1] scheduled or retry set, KEYS[2] pending list
-- ARGV[1] max jobs, ARGV[2] job record key prefix
-- Returns the number of jobs moved.
--@include wake
--@include now
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, payload in ipairs(due) do
  redis.call('ZREM', KEYS[1], payload)
  wake(KEYS[2], redis.call('LPUSH', KEYS[2], payload))
  local ok, job = pcall(cjson.decode, payload)
  if ok and type(job) == 'table' and type(job.id) == 'string' then
    local key = ARGV[2] .. job.id
    if redis.call('EXISTS', key) == 1 then redis.call('HSET', key, 'state', 'queued') end
  end
end
return #due
