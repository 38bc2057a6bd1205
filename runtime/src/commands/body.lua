-- The body of a commit: child jobs, batches, batch index entries and staged
-- Redis writes, checked whole before any of them is written. Included by
-- `commit` (the body goes with the job's snapshot or result, in one step) and
-- by `apply` (on Redis Cluster, the part of a commit that lives in another
-- hash slot, applied there once; see queue/parts.rs). Needs `wake` and `now`
-- included before it.
--
-- All or nothing. Lua cannot roll back, so nothing is written until every
-- write is proved to apply, in two passes that only read:
-- 1. the envelope (`body_envelope`): every count and index in range, every
--    command one of the staged forms with its arity, at most MAX_ARGS
--    arguments (Lua's stack, about 8,000 values, bounds `unpack`: the host
--    cuts longer pushes into pieces, see queue/staged.rs), TTLs within
--    0..MAX_TTL ms, increments 64-bit integers, scores numbers;
-- 2. the writes (`body_check`), simulated in order against the keys' types
--    and values (each write sees what the writes before it leave), with
--    Redis's own rules: WRONGTYPE, counters exact to 64 bits (string2ll's
--    syntax, overflow), HINCRBY on a field that is not an integer, a ZINCRBY
--    whose result is NaN, a key emptied by SREM/ZREM/HDEL or deleted by
--    PEXPIRE 0 being gone.
-- A write that would fail raises {refused = REASON} (see `refuse`): the
-- including script answers 'bad_write:REASON' and writes nothing. Then
-- `body_apply` writes; every command has at most MAX_ARGS arguments and every
-- unpack is cut into slices of at most SLICE values.
--
-- The body's arguments, from ARGV[at]: the child count, and per child: index
-- into KEYS of its pending list, index into KEYS of its record, id, payload,
-- class, queue, args, batch id ('' for none), index into KEYS of its
-- scheduled set (0: none), delay in ms (0: pending at once, else scheduled
-- that long after this step), depth in its job tree; then the batch count,
-- the index into KEYS of the batch index (0: the batches are indexed
-- elsewhere), and per batch: index into KEYS of its hash, index into KEYS of
-- its job set, field count, field, value, ..., member count, member ids (a
-- batch is written sealed, with every member, once, and added to the batch
-- index by its creation time); then the count of batch ids to add to the
-- index on their own (created in another slot), the index into KEYS of the
-- index when that count is not 0, the ids; then the write count, and per
-- write: command, index into KEYS of its key, argument count, arguments.

-- The host's limits (queue/staged.rs: MAX_WRITE_ARGS, MAX_TTL_MS).
local MAX_ARGS = 1000
local MAX_TTL = 3153600000000
-- Values handed to one unpack (Lua's stack takes about 8,000).
local SLICE = 1000

local function refuse(why) error({refused = why}, 0) end
-- A key, field or member as a reason quotes it: at most 200 bytes.
local function name(k)
  if #k > 200 then return string.sub(k, 1, 200) .. '...' end
  return k
end

-- Redis's integers (string2ll): '0', or an optional '-' and digits without a
-- leading zero, within 64 bits. Kept exact as {hi, lo} = hi * 1e9 + lo, both
-- of the number's sign (a Lua number is exact only to 2^53).
local B = 1e9
local function in_range(hi, lo)
  if hi > 9223372036 or hi < -9223372036 then return false end
  if hi == 9223372036 then return lo <= 854775807 end
  if hi == -9223372036 then return lo >= -854775808 end
  return true
end
local function int64(v)
  if v == '0' then return {0, 0} end
  if type(v) ~= 'string' or #v > 20 then return nil end
  local neg, digits = string.match(v, '^(%-?)([1-9]%d*)$')
  if not digits or #digits > 19 then return nil end
  local n = #digits
  local hi = n > 9 and tonumber(string.sub(digits, 1, n - 9)) or 0
  local lo = tonumber(string.sub(digits, math.max(1, n - 8)))
  if neg == '-' then hi, lo = -hi, -lo end
  if not in_range(hi, lo) then return nil end
  return {hi, lo}
end
local function add(a, b)
  local hi, lo = a[1] + b[1], a[2] + b[2]
  if lo >= B then hi, lo = hi + 1, lo - B elseif lo <= -B then hi, lo = hi - 1, lo + B end
  if hi > 0 and lo < 0 then hi, lo = hi - 1, lo + B
  elseif hi < 0 and lo > 0 then hi, lo = hi + 1, lo - B end
  if not in_range(hi, lo) then return nil end
  return {hi, lo}
end
local function int_text(n)
  if n[1] == 0 then return string.format('%.0f', n[2]) end
  local s = string.format('%.0f%09.0f', math.abs(n[1]), math.abs(n[2]))
  if n[1] < 0 then s = '-' .. s end
  return s
end

-- A score as the host writes a double (Rust's `Display`: digits, never an
-- exponent) or an infinity; never NaN.
local function score(v)
  if v == '+inf' or v == '-inf' then return tonumber(v) end
  if #v > 400 or not (string.match(v, '^%-?%d+$') or string.match(v, '^%-?%d+%.%d+$')) then
    return nil
  end
  return tonumber(v)
end

local nkeys, nargv = #KEYS, #ARGV
-- An envelope's number at ARGV[i] (at most `max`).
local function num(i, max)
  local v = ARGV[i]
  if v == nil or #v > 15 or not string.match(v, '^%d+$') then
    refuse('malformed commit envelope at argument ' .. i)
  end
  local n = tonumber(v)
  if max and n > max then refuse('malformed commit envelope at argument ' .. i) end
  return n
end
-- The key ARGV[i] names by its index into KEYS.
local function key_at(i)
  local n = num(i, nkeys)
  if n < 1 then refuse('malformed commit envelope at argument ' .. i) end
  return KEYS[n]
end

local children_at, nchildren, batches_at, nbatches, index_at, nindex, writes

-- Pass 1: the envelope from ARGV[at]; returns the index of the argument
-- after the body.
local function body_envelope(at)
  children_at = at
  nchildren = num(children_at, nargv)
  for c = 0, nchildren - 1 do
    local i = children_at + 1 + c * 11
    key_at(i)
    key_at(i + 1)
    local scheduled, delay = num(i + 8, nkeys), num(i + 9)
    num(i + 10)
    if delay > 0 and scheduled == 0 then refuse('malformed commit envelope at argument ' .. i) end
  end
  batches_at = children_at + 1 + nchildren * 11
  nbatches = num(batches_at, nargv)
  num(batches_at + 1, nkeys)
  local b = batches_at + 2
  for _ = 1, nbatches do
    key_at(b)
    key_at(b + 1)
    local nf = num(b + 2, nargv)
    b = b + 4 + nf * 2 + num(b + 3 + nf * 2, nargv)
  end
  index_at = b
  nindex = num(index_at, nargv)
  local writes_at = index_at + 1
  if nindex > 0 then
    key_at(index_at + 1)
    writes_at = index_at + 2 + nindex
  end

  -- Arity of each staged command after its key: least, most.
  local arity = {SET = {1, 3}, DEL = {0, 0}, PEXPIRE = {1, 1}, INCRBY = {1, 1},
    HSET = {2, 2}, HDEL = {1, 1}, HINCRBY = {2, 2}, SADD = {1, MAX_ARGS},
    SREM = {1, MAX_ARGS}, ZADD = {2, 2}, ZINCRBY = {2, 2}, ZREM = {1, MAX_ARGS},
    RPUSH = {1, MAX_ARGS}, LPUSH = {1, MAX_ARGS}}
  local function ttl(cmd, key, v, least)
    local n = string.match(v or '', '^%d+$') and #v <= 15 and tonumber(v)
    if not n or n < least or n > MAX_TTL then
      refuse(cmd .. ' ' .. key .. ': a TTL must be ' .. least .. ' to ' .. MAX_TTL .. ' ms')
    end
    return n
  end
  writes = {}
  local w = writes_at + 1
  for _ = 1, num(writes_at, nargv) do
    local cmd, nargs = ARGV[w], num(w + 2, nargv)
    local k = key_at(w + 1)
    local key = name(k)
    local a = arity[cmd]
    if not a or nargs < a[1] or nargs > a[2] or w + 2 + nargs > nargv then
      refuse('malformed commit envelope: ' .. name(tostring(cmd)) .. ' with ' .. nargs .. ' arguments (at most ' .. MAX_ARGS .. ' a command)')
    end
    local a1, a2 = ARGV[w + 3], ARGV[w + 4]
    if cmd == 'SET' and nargs == 3 then
      if a2 ~= 'PX' then refuse('malformed commit envelope: SET ' .. key) end
      ttl(cmd, key, ARGV[w + 5], 1)
    elseif cmd == 'SET' and nargs ~= 1 then
      refuse('malformed commit envelope: SET ' .. key)
    elseif cmd == 'PEXPIRE' then
      ttl(cmd, key, a1, 0)
    elseif cmd == 'INCRBY' and not int64(a1) then
      refuse(cmd .. ' ' .. key .. ': the increment is not a 64-bit integer')
    elseif cmd == 'HINCRBY' and not int64(a2) then
      refuse(cmd .. ' ' .. key .. ': the increment is not a 64-bit integer')
    elseif (cmd == 'ZADD' or cmd == 'ZINCRBY') and not score(a1) then
      refuse(cmd .. ' ' .. key .. ': the score is not a number')
    end
    writes[#writes + 1] = {cmd = cmd, key = k, at = w + 3, n = nargs}
    w = w + 3 + nargs
  end
  return w
end

-- Pass 2: the writes against the keys. What each written key holds as the
-- writes go: its type `t`; `fresh` when it was created or cleared in this
-- commit (then nothing of it needs reading); a string's value `raw`; and per
-- hash field, set member or sorted-set member `m` what it holds now (false:
-- absent; nil: not read, as in Redis). `cut` marks a key something was removed
-- from since it was last known not to be empty.
local needs = {INCRBY = 'string', HSET = 'hash', HDEL = 'hash', HINCRBY = 'hash',
  SADD = 'set', SREM = 'set', ZADD = 'zset', ZINCRBY = 'zset', ZREM = 'zset',
  RPUSH = 'list', LPUSH = 'list'}
local removes = {SREM = true, ZREM = true, HDEL = true}
local sim = {}
local function state(key)
  local s = sim[key]
  if not s then
    local kind = redis.call('TYPE', key).ok
    s = {t = kind, m = {}, fresh = kind == 'none'}
    sim[key] = s
  end
  return s
end
local function cleared(s, kind, raw)
  s.t, s.m, s.fresh, s.cut, s.raw = kind, {}, true, false, raw
end
-- Whether a hash, set or sorted set a removal touched is empty now: the key's
-- size in Redis (untouched so far) plus what this commit changed.
local present = {hash = function(k, f) return redis.call('HEXISTS', k, f) == 1 end,
  set = function(k, m) return redis.call('SISMEMBER', k, m) == 1 end,
  zset = function(k, m) return redis.call('ZSCORE', k, m) ~= false end}
local size = {hash = 'HLEN', set = 'SCARD', zset = 'ZCARD'}
local function empty(s, key)
  local n = 0
  if not s.fresh then n = redis.call(size[s.t], key) end
  for m, v in pairs(s.m) do
    local was = (not s.fresh) and present[s.t](key, m)
    n = n + ((v ~= false) and 1 or 0) - (was and 1 or 0)
  end
  return n == 0
end
local function member(s, key, m, read)
  if s.m[m] == nil then
    s.m[m] = (not s.fresh and read(key, m)) or false
  end
  return s.m[m]
end
local function hget(k, f) return redis.call('HGET', k, f) end
local function zscore(k, m)
  local v = redis.call('ZSCORE', k, m)
  return v and tonumber(v)
end
local function counter(what, current, by)
  local cur = {0, 0}
  if current then
    cur = int64(current)
    if not cur then refuse(what .. ': the value is not an integer') end
  end
  local n = add(cur, int64(by))
  if not n then refuse(what .. ': the result would overflow a 64-bit integer') end
  return int_text(n)
end

local function body_check()
  for _, wr in ipairs(writes) do
    local cmd, key = wr.cmd, wr.key
    local a1, a2 = ARGV[wr.at], ARGV[wr.at + 1]
    local s = state(key)
    if cmd == 'SET' then
      cleared(s, 'string', a1)
    elseif cmd == 'DEL' then
      cleared(s, 'none', false)
    elseif cmd == 'PEXPIRE' then
      -- A TTL of 0 deletes the key at once.
      if a1 == '0' then cleared(s, 'none', false) end
    else
      local need = needs[cmd]
      if s.t ~= 'none' and s.t ~= need and s.cut and empty(s, key) then
        cleared(s, 'none', false)
      end
      if s.t ~= 'none' and s.t ~= need then
        refuse(cmd .. ' ' .. name(key) .. ': the key holds a ' .. s.t .. ', not a ' .. need)
      end
      local what = cmd .. ' ' .. name(key)
      if cmd == 'INCRBY' then
        if s.raw == nil then s.raw = (not s.fresh and redis.call('GET', key)) or false end
        s.raw = counter(what, s.raw, a1)
      elseif cmd == 'HINCRBY' then
        s.m[a1] = counter(what .. ' ' .. name(a1), s.t == 'hash' and member(s, key, a1, hget), a2)
      elseif cmd == 'HSET' then
        s.m[a1] = a2
      elseif cmd == 'ZINCRBY' then
        local cur = s.t == 'zset' and member(s, key, a2, zscore) or 0
        local n = cur + score(a1)
        if n ~= n then refuse(what .. ' ' .. name(a2) .. ': the resulting score would be NaN') end
        s.m[a2] = n
      elseif cmd == 'ZADD' then
        s.m[a2] = score(a1)
      elseif cmd == 'SADD' then
        for i = wr.at, wr.at + wr.n - 1 do s.m[ARGV[i]] = true end
      elseif removes[cmd] and s.t ~= 'none' then
        for i = wr.at, wr.at + wr.n - 1 do s.m[ARGV[i]] = false end
        s.cut = true
      end
      -- A removal from a missing key creates nothing.
      if not (removes[cmd] and s.t == 'none') then s.t = need end
    end
  end
end

-- Runs `f` (the passes that only read); a refusal becomes its reason, any
-- other error is raised again.
local function refused(f)
  local ok, err = pcall(f)
  if ok then return nil end
  if type(err) == 'table' and err.refused then return err.refused end
  error(err)
end

-- Pass 3: the writes. Every unpack is cut into slices of at most SLICE values.
local function sliced(cmd, key, from, to)
  for i = from, to, SLICE do
    redis.call(cmd, key, unpack(ARGV, i, math.min(i + SLICE - 1, to)))
  end
end

-- Writes the body checked by the passes above; `parent` is the id of the job
-- whose commit it is.
local function body_apply(parent)
  local i = children_at + 1
  for _ = 1, nchildren do
    local list, key, id = KEYS[tonumber(ARGV[i])], KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2]
    -- A child whose id has a record was committed before: never twice.
    if redis.call('HSETNX', key, 'id', id) == 1 then
      local delay = tonumber(ARGV[i + 9])
      local state = 'queued'
      if delay > 0 then
        -- Delayed: due `delay` ms after this step, in its scheduled set.
        redis.call('ZADD', KEYS[tonumber(ARGV[i + 8])], now + delay, ARGV[i + 3])
        redis.call('HSET', key, 'due_at', now + delay)
        state = 'scheduled'
      else
        wake(list, redis.call('LPUSH', list, ARGV[i + 3]))
      end
      redis.call('HSET', key, 'class', ARGV[i + 4], 'queue', ARGV[i + 5], 'args', ARGV[i + 6],
        'state', state, 'attempts', 0, 'enqueued_at', now, 'parent', parent,
        'depth', ARGV[i + 10])
      if ARGV[i + 7] ~= '' then redis.call('HSET', key, 'batch', ARGV[i + 7]) end
    end
    i = i + 11
  end

  local b = batches_at + 2
  local index = tonumber(ARGV[batches_at + 1])
  for _ = 1, nbatches do
    local meta, jobs, nf = KEYS[tonumber(ARGV[b])], KEYS[tonumber(ARGV[b + 1])], tonumber(ARGV[b + 2])
    local first_member = b + 4 + nf * 2
    local last_member = b + 3 + nf * 2 + tonumber(ARGV[b + 3 + nf * 2])
    if redis.call('EXISTS', meta) == 0 then
      redis.call('HSET', meta, 'created_at', now, 'sealed', now, 'parent', parent,
        'total', last_member - first_member + 1)
      -- Field-value pairs stay whole: SLICE is even.
      sliced('HSET', meta, b + 3, b + 2 + nf * 2)
      sliced('SADD', jobs, first_member, last_member)
      if index > 0 then redis.call('ZADD', KEYS[index], now, redis.call('HGET', meta, 'id')) end
    end
    b = last_member + 1
  end

  if nindex > 0 then
    local key = KEYS[tonumber(ARGV[index_at + 1])]
    for j = index_at + 2, index_at + 1 + nindex do
      redis.call('ZADD', key, 'NX', now, ARGV[j])
    end
  end

  for _, wr in ipairs(writes) do
    redis.call(ARGV[wr.at - 3], wr.key, unpack(ARGV, wr.at, wr.at + wr.n - 1))
  end
end
