-- Commits a checkpoint, or a job's completion with its child jobs, in one
-- atomic step. Idempotent: a commit retried after its reply was lost finds its
-- sequence already recorded and changes nothing.
-- KEYS[1] job record, KEYS[2] snapshot, KEYS[3] the worker's in-flight list,
-- KEYS[4] stats hash, KEYS[5...] pending lists of the child jobs' queues
-- ARGV[1] mode: 'checkpoint' (snapshot stored, the job goes on) or 'done'
--   (result recorded, the job leaves the in-flight list, its snapshot is deleted)
-- ARGV[2] lease (the attempt number the fetch recorded), ARGV[3] sequence of
-- this commit (the last committed one + 1), ARGV[4] snapshot (checkpoint) or
-- the payload as fetched (done), ARGV[5] done record TTL (s), ARGV[6] field
-- count, field, value, ..., then the child count, and per child: index into
-- KEYS of its pending list, its record key, id, payload, class, queue, args.
-- Returns 'ok', 'applied' (this sequence was already committed) or
-- 'lease_lost' (the job was recovered from this attempt; nothing written).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rec = KEYS[1]
local mode, seq = ARGV[1], tonumber(ARGV[3])
local held = redis.call('HMGET', rec, 'lease', 'seq')
if held[1] ~= ARGV[2] then return 'lease_lost' end
if tonumber(held[2] or '0') >= seq then return 'applied' end
if mode == 'done' and redis.call('LREM', KEYS[3], -1, ARGV[4]) == 0 then
  return 'lease_lost'
end

local nfields = tonumber(ARGV[6])
local first, last = 7, 6 + nfields * 2
local i = last + 1
local parent = string.match(rec, 'job:([%w_%-]+)$')
for _ = 1, tonumber(ARGV[i]) do
  local list, key, id = KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2], ARGV[i + 3]
  -- A child whose id has a record was committed before: never twice.
  if redis.call('HSETNX', key, 'id', id) == 1 then
    redis.call('LPUSH', list, ARGV[i + 4])
    redis.call('HSET', key, 'class', ARGV[i + 5], 'queue', ARGV[i + 6], 'args', ARGV[i + 7],
      'state', 'queued', 'attempts', 0, 'enqueued_at', now, 'parent', parent)
  end
  i = i + 7
end

if mode == 'checkpoint' then
  redis.call('SET', KEYS[2], ARGV[4])
  redis.call('HSET', rec, 'seq', seq, 'checkpointed_at', now, 'crashes', 0,
    unpack(ARGV, first, last))
else
  redis.call('DEL', KEYS[2])
  redis.call('HSET', rec, 'seq', seq, 'state', 'done', 'finished_at', now,
    unpack(ARGV, first, last))
  redis.call('EXPIRE', rec, tonumber(ARGV[5]))
  redis.call('HINCRBY', KEYS[4], 'processed', 1)
end
return 'ok'
