-- Commits a checkpoint, or a job's completion, with its child jobs and staged
-- Redis writes, in one atomic step. Idempotent: a commit retried after its
-- reply was lost finds its sequence already recorded and changes nothing.
-- Lua cannot roll back, so every write is checked against the keys first
-- (type, integer values) and the commit is refused whole if one cannot apply.
-- KEYS[1] job record, KEYS[2] snapshot, KEYS[3] the worker's in-flight list,
-- KEYS[4] stats hash, KEYS[5...] pending lists of the child jobs' queues, then
-- the keys of the staged writes
-- ARGV[1] mode: 'checkpoint' (snapshot stored, the job goes on) or 'done'
--   (result recorded, the job leaves the in-flight list, its snapshot is deleted)
-- ARGV[2] lease (the attempt number the fetch recorded), ARGV[3] sequence of
-- this commit (the last committed one + 1), ARGV[4] snapshot (checkpoint) or
-- the payload as fetched (done), ARGV[5] done record TTL (s), ARGV[6] field
-- count, field, value, ..., then the child count, and per child: index into
-- KEYS of its pending list, its record key, id, payload, class, queue, args;
-- then the write count, and per write: command, index into KEYS of its key,
-- argument count, arguments.
-- Returns 'ok', 'applied' (this sequence was already committed),
-- 'lease_lost' (the job was recovered from this attempt; nothing written) or
-- 'bad_write:REASON' (a staged write cannot apply; nothing written).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rec = KEYS[1]
local mode, seq = ARGV[1], tonumber(ARGV[3])
local held = redis.call('HMGET', rec, 'lease', 'seq')
if held[1] ~= ARGV[2] then return 'lease_lost' end
if tonumber(held[2] or '0') >= seq then return 'applied' end

local nfields = tonumber(ARGV[6])
local first, last = 7, 6 + nfields * 2
local children_at = last + 1
local writes_at = children_at + 1 + tonumber(ARGV[children_at]) * 7

-- Every staged write must apply, or none is made.
local needs = {INCRBY = 'string', HSET = 'hash', HDEL = 'hash', HINCRBY = 'hash',
  SADD = 'set', SREM = 'set', ZADD = 'zset', ZINCRBY = 'zset', ZREM = 'zset',
  RPUSH = 'list', LPUSH = 'list'}
local w = writes_at + 1
for _ = 1, tonumber(ARGV[writes_at]) do
  local cmd, key, nargs = ARGV[w], KEYS[tonumber(ARGV[w + 1])], tonumber(ARGV[w + 2])
  local need = needs[cmd]
  if need then
    local t = redis.call('TYPE', key).ok
    if t ~= 'none' and t ~= need then
      return 'bad_write:' .. cmd .. ' ' .. key .. ': the key holds a ' .. t .. ', not a ' .. need
    end
    local v
    if cmd == 'INCRBY' and t == 'string' then v = redis.call('GET', key) end
    if cmd == 'HINCRBY' and t == 'hash' then v = redis.call('HGET', key, ARGV[w + 3]) end
    if v and not string.match(v, '^%-?%d+$') then
      return 'bad_write:' .. cmd .. ' ' .. key .. ': the value is not an integer'
    end
  end
  w = w + 3 + nargs
end

if mode == 'done' and redis.call('LREM', KEYS[3], -1, ARGV[4]) == 0 then
  return 'lease_lost'
end

local i = children_at
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

w = writes_at + 1
for _ = 1, tonumber(ARGV[writes_at]) do
  local nargs = tonumber(ARGV[w + 2])
  redis.call(ARGV[w], KEYS[tonumber(ARGV[w + 1])], unpack(ARGV, w + 3, w + 2 + nargs))
  w = w + 3 + nargs
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
