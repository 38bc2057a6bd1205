#!lua
-- Drops the entries of the batch index older than ARGV[1] ms, by Redis time.
-- KEYS[1] the batch index (a sorted set scored by ms since the epoch)
-- Returns how many entries were dropped.
--@include now
return redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - tonumber(ARGV[1])))
