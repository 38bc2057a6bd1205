#!lua
-- The dashboard's retry now: a scheduled or retrying job (the member: its
-- payload) or a dead one (the member: its id, re-queued with the payload its
-- record keeps) moves to be fetched next from its queue's pending list, in
-- one step, waking the workers idle on an empty queue.
-- KEYS[1] the set, KEYS[2] pending list, KEYS[3] the job record, KEYS[4] its snapshot
-- ARGV[1] member, ARGV[2] 'dead' or 'payload'
-- Returns 1 (moved), 0 (the member was no longer in the set, or a dead job's
-- record has expired: nothing to run) or {'duplicate', id of the job it
-- duplicates} (refused, nothing changed).
--@include wake
-- A duplicate's payload reuses another job's id: run again, it would only be
-- refused again (and leave this entry queued), so it stays where it is.
if ARGV[2] == 'dead' and redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  local of = redis.call('HGET', KEYS[3], 'duplicate_of')
  if of then return {'duplicate', of} end
end
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
local payload = ARGV[1]
if ARGV[2] == 'dead' then
  payload = redis.call('HGET', KEYS[3], 'payload')
  if not payload or payload == '' then
    -- Nothing to run: the record (and its payload) has expired.
    redis.call('DEL', KEYS[3], KEYS[4])
    return 0
  end
  redis.call('PERSIST', KEYS[3])
  redis.call('PERSIST', KEYS[4])
end
--@include now
wake(KEYS[2], redis.call('RPUSH', KEYS[2], payload))
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('HSET', KEYS[3], 'state', 'queued', 'due_at', now)
end
return 1
