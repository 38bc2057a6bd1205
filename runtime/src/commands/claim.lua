#!lua
-- A collapsible job about to start: run it, or drop it as superseded.
-- KEYS[1] the collapse key, KEYS[2] the job's record; ARGV[1] the job's id
-- Returns {'run', ''} or {'collapsed', the id of the job that superseded it}.
-- A job that ran once runs again when fetched again (interrupted, retried).
if redis.call('HEXISTS', KEYS[2], 'ran') == 1 then return {'run', ''} end
local by = redis.call('HGET', KEYS[2], 'collapsed_by')
if by then return {'collapsed', by} end
redis.call('HSET', KEYS[2], 'ran', 1)
-- Started: a newer enqueue makes a new job, to run after this one.
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return {'run', ''}
