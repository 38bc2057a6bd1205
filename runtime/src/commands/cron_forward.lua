#!lua
-- Records a scheduled class's last tick, only forward (a node with an older
-- tick never moves it back).
-- KEYS[1] the cron hash; ARGV[1] the class, ARGV[2] the tick (ms since the epoch)
-- Returns 0.
local last = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > last then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 0
