-- Returns every job in a dead worker's in-flight list to the front of the
-- pending list (they are fetched next, oldest first).
-- KEYS[1] the dead worker's in-flight list, KEYS[2] pending list
-- ARGV[1] job record key prefix
-- Returns the number of jobs recovered.
local n = 0
while true do
  local payload = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
  if not payload then break end
  n = n + 1
  local ok, job = pcall(cjson.decode, payload)
  if ok and type(job) == 'table' and type(job.id) == 'string' then
    local key = ARGV[1] .. job.id
    if redis.call('EXISTS', key) == 1 then
      redis.call('HSET', key, 'state', 'queued')
      redis.call('HINCRBY', key, 'recovered', 1)
    end
  end
end
return n
