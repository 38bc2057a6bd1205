#!lua
-- The dashboard's delete: the job leaves its set, and its record, snapshot
-- and any unique key it holds go with it.
-- KEYS[1] the set, KEYS[2] the job record, KEYS[3] its snapshot; ARGV[1] member, ARGV[2] id
-- Returns 1, or 0 when the member was no longer in the set (nothing changed).
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
if ARGV[2] ~= '' then
  local unique = redis.call('HGET', KEYS[2], 'unique_key')
  if unique and redis.call('GET', unique) == ARGV[2] then redis.call('DEL', unique) end
  redis.call('DEL', KEYS[2], KEYS[3])
end
return 1
