-- Commits a checkpoint, or a job's completion, with its child jobs and staged
-- Redis writes, in one atomic step. Idempotent: a commit retried after its
-- reply was lost finds its sequence already recorded and changes nothing.
--
-- Lua cannot roll back, so nothing is written until every write is known to
-- apply: the writes are simulated in order against the keys' types and
-- counter values (each write sees what the writes before it leave), with
-- Redis's own integer rules, and the commit is refused whole if one would
-- fail. The simulation errs on the side of refusing: a counter within 2^52 of
-- the 64-bit limit is refused, a set emptied by SREM still counts as a set.
-- The shebang (`#!lua`, put first when queue/mod.rs loads this file) makes
-- Redis refuse the whole script up front when it is out of memory, instead of
-- failing at the first write.
--
-- KEYS[1] job record, KEYS[2] snapshot, KEYS[3] the worker's in-flight list,
-- KEYS[4] stats hash, KEYS[5] the queue's batch outbox, then the pending lists
-- and records of the child jobs, the hashes and job sets of the staged batches,
-- then the keys of the staged writes.
-- ARGV[1] mode: 'checkpoint' (snapshot stored, the job goes on) or 'done'
--   (result recorded, the job leaves the in-flight list, its snapshot is deleted)
-- ARGV[2] lease (the attempt number the fetch recorded), ARGV[3] sequence of
-- this commit (the last committed one + 1), ARGV[4] snapshot (checkpoint) or
-- the payload as fetched (done), ARGV[5] done record TTL (s), ARGV[6] field
-- count, field, value, ..., then the child count, and per child: index into
-- KEYS of its pending list, index into KEYS of its record, id, payload, class,
-- queue, args, batch id ('' for none), index into KEYS of its scheduled set
-- (0: none), delay in ms (0: pending at once, else scheduled that long after
-- this commit); then the batch count, the index into KEYS of the batch index
-- (0: no batches; the scheduler trims it), and per batch:
-- index into KEYS of its hash, index into KEYS of its job set, field count,
-- field, value, ..., member count, member ids (a batch is written sealed, with
-- every member, once, and added to the batch index by its creation time);
-- then the write count, and per write: command, index into KEYS of its key,
-- argument count, arguments.
-- A job finishing ('done') whose record names a batch is added to the batch
-- outbox (see settle.lua).
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
if mode == 'done' and not redis.call('LPOS', KEYS[3], ARGV[4]) then
  return 'lease_lost'
end

local nfields = tonumber(ARGV[6])
local first, last = 7, 6 + nfields * 2
local children_at = last + 1
local batches_at = children_at + 1 + tonumber(ARGV[children_at]) * 10
local writes_at = batches_at + 2
for _ = 1, tonumber(ARGV[batches_at]) do
  local nf = tonumber(ARGV[writes_at + 2])
  writes_at = writes_at + 4 + nf * 2 + tonumber(ARGV[writes_at + 3 + nf * 2])
end

-- Redis's integers: an optional '-', no leading zero, 64 bits. Values within
-- 2^52 of the limit are refused: past 2^53 a Lua number is not exact.
local LIMIT = 9223372036854775807 - 2 ^ 52
local function integer(v)
  if v == '0' then return 0 end
  if type(v) ~= 'string' or #v > 20 or not string.match(v, '^%-?[1-9]%d*$') then return nil end
  local n = tonumber(v)
  if n > LIMIT or n < -LIMIT then return nil end
  return n
end

local needs = {INCRBY = 'string', HSET = 'hash', HDEL = 'hash', HINCRBY = 'hash',
  SADD = 'set', SREM = 'set', ZADD = 'zset', ZINCRBY = 'zset', ZREM = 'zset',
  RPUSH = 'list', LPUSH = 'list'}
local removes = {SREM = true, ZREM = true, HDEL = true}

-- What each written key holds as the writes go: its type, a string's value,
-- hash fields' values (false: absent), and whether it was created or cleared
-- in this commit (then nothing of it needs reading).
local sim = {}
local function state(key)
  local s = sim[key]
  if not s then
    local kind = redis.call('TYPE', key).ok
    s = {t = kind, f = {}, fresh = kind == 'none'}
    sim[key] = s
  end
  return s
end
local function string_value(s, key)
  if s.raw == nil then s.raw = (not s.fresh and redis.call('GET', key)) or false end
  return s.raw
end
local function field_value(s, key, f)
  if s.f[f] == nil then s.f[f] = (not s.fresh and redis.call('HGET', key, f)) or false end
  return s.f[f]
end
local function counter(cmd, key, current, by)
  local cur = 0
  if current then
    cur = integer(current)
    if not cur then return nil, cmd .. ' ' .. key .. ': the value is not an integer' end
  end
  local n = cur + tonumber(by)
  if n > LIMIT or n < -LIMIT then
    return nil, cmd .. ' ' .. key .. ': the result would overflow a 64-bit integer'
  end
  return string.format('%.0f', n)
end

local w = writes_at + 1
for _ = 1, tonumber(ARGV[writes_at]) do
  local cmd, key, nargs = ARGV[w], KEYS[tonumber(ARGV[w + 1])], tonumber(ARGV[w + 2])
  local a1, a2 = ARGV[w + 3], ARGV[w + 4]
  local s = state(key)
  if cmd == 'SET' then
    s.t, s.raw, s.f, s.fresh = 'string', a1, {}, true
  elseif cmd == 'DEL' then
    s.t, s.raw, s.f, s.fresh = 'none', false, {}, true
  elseif cmd ~= 'PEXPIRE' then
    local need = needs[cmd]
    if s.t ~= 'none' and s.t ~= need then
      return 'bad_write:' .. cmd .. ' ' .. key .. ': the key holds a ' .. s.t .. ', not a ' .. need
    end
    local err
    if cmd == 'INCRBY' then
      s.raw, err = counter(cmd, key, s.t == 'string' and string_value(s, key), a1)
    elseif cmd == 'HINCRBY' then
      s.f[a1], err = counter(cmd, key, s.t == 'hash' and field_value(s, key, a1), a2)
    elseif cmd == 'HSET' then
      s.f[a1] = a2
    elseif cmd == 'HDEL' then
      s.f[a1] = false
    end
    if err then return 'bad_write:' .. err end
    -- A removal from a missing key creates nothing.
    if not (removes[cmd] and s.t == 'none') then s.t = need end
  end
  w = w + 3 + nargs
end

local i = children_at + 1
local parent = string.match(rec, 'job:([%w_%-]+)$')
for _ = 1, tonumber(ARGV[children_at]) do
  local list, key, id = KEYS[tonumber(ARGV[i])], KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2]
  -- A child whose id has a record was committed before: never twice.
  if redis.call('HSETNX', key, 'id', id) == 1 then
    local delay = tonumber(ARGV[i + 9])
    local state = 'queued'
    if delay > 0 then
      -- Delayed: due `delay` ms after this commit, in its scheduled set.
      redis.call('ZADD', KEYS[tonumber(ARGV[i + 8])], now + delay, ARGV[i + 3])
      redis.call('HSET', key, 'due_at', now + delay)
      state = 'scheduled'
    else
      wake(list, redis.call('LPUSH', list, ARGV[i + 3]))
    end
    redis.call('HSET', key, 'class', ARGV[i + 4], 'queue', ARGV[i + 5], 'args', ARGV[i + 6],
      'state', state, 'attempts', 0, 'enqueued_at', now, 'parent', parent)
    if ARGV[i + 7] ~= '' then redis.call('HSET', key, 'batch', ARGV[i + 7]) end
  end
  i = i + 10
end

local b = batches_at + 2
local index = tonumber(ARGV[batches_at + 1])
for _ = 1, tonumber(ARGV[batches_at]) do
  local meta, jobs, nf = KEYS[tonumber(ARGV[b])], KEYS[tonumber(ARGV[b + 1])], tonumber(ARGV[b + 2])
  local first_member = b + 4 + nf * 2
  local last_member = b + 3 + nf * 2 + tonumber(ARGV[b + 3 + nf * 2])
  if redis.call('EXISTS', meta) == 0 then
    redis.call('HSET', meta, 'created_at', now, 'sealed', now, 'parent', parent,
      'total', last_member - first_member + 1, unpack(ARGV, b + 3, b + 2 + nf * 2))
    -- unpack is bounded by Lua's stack: members go in slices.
    for m = first_member, last_member, 1000 do
      redis.call('SADD', jobs, unpack(ARGV, m, math.min(m + 999, last_member)))
    end
    redis.call('ZADD', KEYS[index], now, redis.call('HGET', meta, 'id'))
  end
  b = last_member + 1
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
  redis.call('LREM', KEYS[3], -1, ARGV[4])
  redis.call('DEL', KEYS[2])
  redis.call('HSET', rec, 'seq', seq, 'state', 'done', 'finished_at', now,
    unpack(ARGV, first, last))
  redis.call('EXPIRE', rec, tonumber(ARGV[5]))
  redis.call('HINCRBY', KEYS[4], 'processed', 1)
  local batch = redis.call('HGET', rec, 'batch')
  if batch then redis.call('SADD', KEYS[5], batch .. ' ' .. parent .. ' done') end
end
return 'ok'
