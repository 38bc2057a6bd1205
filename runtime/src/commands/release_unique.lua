#!lua
-- Releases a unique key if the job still holds it (a later job may hold it
-- already, after the TTL).
-- KEYS[1] the unique key; ARGV[1] the job's id
-- Returns 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
