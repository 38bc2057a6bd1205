-- Redis's clock, the one every node agrees on: `now` in ms since the epoch,
-- and `t` the reply of TIME (seconds, microseconds) it is made of.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
