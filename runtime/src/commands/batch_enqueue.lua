#!lua
-- Enqueues jobs of one batch on one queue, now, each with its record naming
-- its batch, in one atomic step. Refused whole (nothing written) when one of
-- the ids already has a record of another batch (or none). A job whose
-- record names this batch was queued by this same call run before (on Redis
-- Cluster, redis-rs sends a request again when its connection dropped
-- before the reply; a batch's id and its jobs' ids are new to each create):
-- it is not queued again, and counts as queued.
-- KEYS[1] pending list
-- ARGV[1] job record key prefix, ARGV[2] queue, ARGV[3] batch id, then per job:
-- id, class, args (JSON), payload
-- Returns the number of jobs queued.
--@include wake
--@include now
local prefix, queue, batch = ARGV[1], ARGV[2], ARGV[3]
local ours = {}
for i = 4, #ARGV, 4 do
  if redis.call('EXISTS', prefix .. ARGV[i]) == 1 then
    if redis.call('HGET', prefix .. ARGV[i], 'batch') ~= batch then
      return redis.error_reply('DUPLICATE a job with id ' .. ARGV[i] .. ' already exists')
    end
    ours[i] = true
  end
end
local n = 0
for i = 4, #ARGV, 4 do
  if not ours[i] then
    wake(KEYS[1], redis.call('LPUSH', KEYS[1], ARGV[i + 3]))
    redis.call('HSET', prefix .. ARGV[i], 'id', ARGV[i], 'class', ARGV[i + 1], 'queue', queue,
      'args', ARGV[i + 2], 'state', 'queued', 'attempts', 0, 'enqueued_at', now, 'due_at', now,
      'batch', batch)
  end
  n = n + 1
end
return n
