#!lua
-- Settles a batch of jobs one worker took from one queue: each leaves the
-- worker's in-flight list and goes where its outcome sends it, and its record is
-- updated, in one atomic step. A job no longer in the in-flight list is left
-- alone and counted in the reply, as one of two cases its record tells apart:
-- - settled already by this very call: a re-sent request (a reply lost, a
--   write a replica did not confirm) whose first run was applied. The record
--   still names this worker and this attempt's lease, and is no longer
--   `running` (recover.lua clears the lease; a later fetch sets another);
-- - lost: recovered from this worker (its heartbeat expired), so it belongs to
--   another attempt now.
-- KEYS[1] in-flight list, KEYS[2] pending list, KEYS[3] retry set, KEYS[4] dead set,
-- KEYS[5] stats hash, KEYS[6] scheduled set, KEYS[7] batch outbox
-- ARGV[1] job record key prefix, ARGV[2] dead set cap, ARGV[3] done record TTL (s),
-- ARGV[4] dead record TTL (s), ARGV[5] number of jobs, ARGV[6] snapshot key prefix,
-- ARGV[7] failed attempts kept per record, ARGV[8] and ARGV[9] the longest
-- message and backtrace (bytes) kept in each, ARGV[10] the worker's id, then per
-- job: payload, id, action, arg, next payload, batch ('b' when the job's record
-- names a batch, as its fetch found), attempt (its fetch's lease), field count,
-- field, value, ...
--   done:    result recorded; record expires after the done TTL; arg 'snap':
--            the job's snapshot is deleted
--   retry:   next payload into the retry set, due in arg ms (a snapshot stays:
--            the next attempt resumes from it)
--   dead:    id into the dead set (capped: the oldest records are dropped); arg
--            'snap': the snapshot expires with the record
--   defer:   not started (a class limiter said no): next payload into the
--            scheduled set, due in arg ms; no failure counted
--   park:    as defer, for a job a destination's limiter or breaker stopped
--            mid-run (it resumes from its last checkpoint)
--   collapsed: never started, superseded by a newer job of its collapse key;
--            the record expires after the done TTL
--   requeue: next payload back to the pending list; arg 'front' (fetched next) or
--            'back'; due again now (its queue latency counts from here)
-- A retry or dead job (a failed attempt) also gets an entry appended to its
-- record's `failures`: a JSON array, newest last, of at most ARGV[7] entries
-- {attempt, at_ms, kind, message, backtrace, usage}, read from the job's
-- `error_kind`, `error_message`, `backtrace` and `usage` fields (`usage` as the
-- worker wrote it; message and backtrace cut on a character, ending in '…').
-- Nothing else adds to it: a done job keeps the failures before it, and a
-- crash is no failed attempt (recover.lua counts it in `crashes`). A
-- `failures` this script cannot read is started afresh, never an error: one
-- would fail the whole batch of settlements.
-- A done or dead job whose record names a batch is added to the batch outbox
-- (`BATCH ID done|dead`), applied to the batch by `batch_apply.lua`.
-- Returns {jobs lost, jobs added to the batch outbox, jobs settled already}; a
-- batch member settled already counts as added (its entry may wait to be
-- applied).
-- A plain done job costs one LREM, one HSET and one EXPIRE (see fetch.lua on
-- why calls are counted), and the time is turned into a string once per call.
--@include wake
--@include now
local now_s = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
local prefix, cap = ARGV[1], tonumber(ARGV[2])
local done_ttl, dead_ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local snap = ARGV[6]
local history, message_max, backtrace_max = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local i, lost, processed, failed, dead, parked, collapsed = 11, 0, 0, 0, 0, 0, 0
local outboxed, already = 0, 0
local me = ARGV[10]
local function outbox(key, id, what, member)
  if member ~= 'b' then return end
  local batch = redis.call('HGET', key, 'batch')
  if batch then
    redis.call('SADD', KEYS[7], batch .. ' ' .. id .. ' ' .. what)
    outboxed = outboxed + 1
  end
end
-- `s` cut to at most `max` bytes, on the start of a UTF-8 character.
local function cut(s, max)
  if #s <= max then return s end
  max = math.max(max - 3, 0) -- room for the '…'
  while max > 0 do
    local b = string.byte(s, max + 1)
    if b < 0x80 or b >= 0xC0 then break end
    max = max - 1
  end
  return string.sub(s, 1, max) .. '…'
end
-- The record's `failures` with this attempt's entry appended (the job's
-- fields are ARGV[first..last]).
local function failures(key, first, last)
  local f = {}
  for k = first, last - 1, 2 do f[ARGV[k]] = ARGV[k + 1] end
  local known = redis.call('HMGET', key, 'attempts', 'failures')
  local list = {}
  if known[2] then
    local ok, old = pcall(cjson.decode, known[2])
    if ok and type(old) == 'table' then
      for k = math.max(1, #old - history + 2), #old do
        if type(old[k]) == 'table' then list[#list + 1] = old[k] end
      end
    end
  end
  local entry = {attempt = tonumber(known[1]) or 0, at_ms = now, kind = f.error_kind or '',
    message = cut(f.error_message or '', message_max),
    backtrace = cut(f.backtrace or '', backtrace_max), usage = f.usage or ''}
  list[#list + 1] = entry
  local ok, text = pcall(cjson.encode, list)
  if ok then return text end
  return cjson.encode({entry})
end
for _ = 1, tonumber(ARGV[5]) do
  local payload, id, action, arg, next_payload = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local member, attempt = ARGV[i + 5], ARGV[i + 6]
  local nfields = tonumber(ARGV[i + 7])
  -- The job's fields are ARGV[first..last], passed to HSET without copying.
  local first, last = i + 8, i + 7 + nfields * 2
  i = last + 1
  -- The oldest jobs sit at the tail of the in-flight list: search from there.
  if redis.call('LREM', KEYS[1], -1, payload) == 0 then
    local held = redis.call('HMGET', prefix .. id, 'worker', 'lease', 'state')
    if attempt ~= '0' and held[1] == me and held[2] == attempt and held[3] and held[3] ~= 'running' then
      already = already + 1
      if member == 'b' then outboxed = outboxed + 1 end
    else
      lost = lost + 1
    end
  else
    local key = prefix .. id
    if action == 'done' then
      redis.call('HSET', key, 'state', 'done', 'finished_at', now_s, unpack(ARGV, first, last))
      redis.call('EXPIRE', key, done_ttl)
      if arg == 'snap' then redis.call('DEL', snap .. id) end
      processed = processed + 1
      outbox(key, id, 'done', member)
    elseif action == 'retry' then
      local due = now + tonumber(arg)
      redis.call('ZADD', KEYS[3], due, next_payload)
      redis.call('HSET', key, 'state', 'retrying', 'finished_at', now_s, 'due_at', due,
        'crashes', 0, 'failures', failures(key, first, last), unpack(ARGV, first, last))
      failed = failed + 1
    elseif action == 'dead' then
      redis.call('ZADD', KEYS[4], now, id)
      redis.call('HSET', key, 'state', 'dead', 'finished_at', now_s, 'payload', next_payload,
        'failures', failures(key, first, last), unpack(ARGV, first, last))
      redis.call('EXPIRE', key, dead_ttl)
      if arg == 'snap' then redis.call('EXPIRE', snap .. id, dead_ttl) end
      failed, dead = failed + 1, dead + 1
      outbox(key, id, 'dead', member)
      local excess = redis.call('ZCARD', KEYS[4]) - cap
      if excess > 0 then
        local popped = redis.call('ZPOPMIN', KEYS[4], excess)
        for k = 1, #popped, 2 do -- member, score, member, score, ...
          redis.call('DEL', prefix .. popped[k], snap .. popped[k])
        end
      end
    elseif action == 'defer' or action == 'park' then
      local due = now + tonumber(arg)
      redis.call('ZADD', KEYS[6], due, next_payload)
      redis.call('HSET', key, 'state', 'scheduled', 'due_at', due, unpack(ARGV, first, last))
      if action == 'park' then
        redis.call('HINCRBY', key, 'parked', 1)
        parked = parked + 1
      else
        redis.call('HINCRBY', key, 'deferred', 1)
      end
    elseif action == 'collapsed' then
      redis.call('HSET', key, 'state', 'collapsed', 'finished_at', now_s, unpack(ARGV, first, last))
      redis.call('EXPIRE', key, done_ttl)
      collapsed = collapsed + 1
    elseif action == 'requeue' then
      if arg == 'front' then
        wake(KEYS[2], redis.call('RPUSH', KEYS[2], next_payload))
      else
        wake(KEYS[2], redis.call('LPUSH', KEYS[2], next_payload))
      end
      if redis.call('EXISTS', key) == 1 then
        redis.call('HSET', key, 'state', 'queued', 'due_at', now_s, unpack(ARGV, first, last))
      end
    end
  end
end
if processed > 0 then redis.call('HINCRBY', KEYS[5], 'processed', processed) end
if failed > 0 then redis.call('HINCRBY', KEYS[5], 'failed', failed) end
if dead > 0 then redis.call('HINCRBY', KEYS[5], 'dead', dead) end
if parked > 0 then redis.call('HINCRBY', KEYS[5], 'parked', parked) end
if collapsed > 0 then redis.call('HINCRBY', KEYS[5], 'collapsed', collapsed) end
return {lost, outboxed, already}
