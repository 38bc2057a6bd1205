#!lua
-- Reliable fetch: moves up to ARGV[1] jobs, oldest first, from the pending list
-- to this worker's in-flight list and marks each job's record running, with a
-- lease: the attempt number, which a checkpoint commit must present (commit.lua)
-- and which recovery clears (recover.lua). A job
-- stays in the in-flight list until its outcome is settled (settle.lua) or the
-- worker is declared dead and its jobs are recovered (recover.lua).
-- KEYS[1] pending list, KEYS[2] this worker's in-flight list, KEYS[3] the
-- queue's pause flag (a paused queue gives nothing), KEYS[4] the worker's
-- last fetch (below)
-- ARGV[1] max jobs, ARGV[2] worker id, ARGV[3] job record key prefix, ARGV[4]
-- queue name, ARGV[5] this call's nonce ('' for none)
-- On Redis Cluster, redis-rs sends a request again when its connection
-- dropped (or its reply was late) before the reply: the jobs the first run
-- moved would sit in the in-flight list, running on a worker that never
-- heard of them, until its reconciliation takes them back (a heartbeat TTL
-- or two later, worker/reconcile.rs). So a call with a nonce keeps its
-- reply in KEYS[4] (60 s), and a second run with the same nonce answers it
-- again, moving nothing.
-- Returns {payload, attempt, id, seq, waited, batch, duplicate, stalls,
-- payload, ...}, seq being the
-- job's last committed checkpoint (0: none, a fresh start), waited the ms since
-- it was enqueued, due, or put back (-1: unknown, a job without a record),
-- batch 1 when the job belongs to a batch (its settlement tells the batch),
-- and stalls the attempts in a row that yielded without a checkpoint (the
-- record's `stalls`, COUNT:SEQ, if SEQ is still the job's `seq`). For
-- a payload this script cannot read as a job, attempt is 0 and id is '' (or the
-- id it found): the worker sends it to the dead set.
-- One id, one job (job.rs): a payload whose id has a record runs only if it is
-- the copy Stoker queued (the record is `queued` and the tokens agree). Any
-- other is a duplicate: attempt 0, id the id it names, duplicate that job's
-- state; its record is not touched, and the worker sends the payload to the
-- dead set under an id of its own. A copy that runs sets the record running, so
-- a second copy of it, in this call or a later one, is a duplicate.
-- Nothing after a move may
-- raise an error, or the moved payloads would be stranded in the in-flight list.
-- This runs for every job: each job costs one LMOVE, one HMGET and one HSET
-- (Redis spends more on a call from Lua than on most commands themselves), and
-- the time is turned into a string once per call, not once per job.
--@include ident
--@include now
local now_s = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))

local function decode(payload)
  local ok, job = pcall(cjson.decode, payload)
  if ok and type(job) == 'table' then return job end
  return nil
end

local function start(payload)
  local id, token, job = ident(payload)
  if not id then return 0, '' end
  local key = ARGV[3] .. id
  if job and type(job.class) ~= 'string' then
    -- Not a job: dead under its own id, unless that id is another job's.
    local state = redis.call('HGET', key, 'state')
    if state then return 0, id, 0, -1, 0, state end
    return 0, id
  end
  -- Every record Stoker writes has `attempts` and `state`; a job without them
  -- was pushed by a plain LPUSH and has not been fetched yet.
  local known = redis.call('HMGET', key, 'seq', 'enqueued_at', 'due_at', 'attempts', 'batch',
    'state', 'token', 'stalls')
  if known[4] or known[6] then
    if known[6] ~= 'queued' or (known[7] or '0') ~= token then
      return 0, id, 0, -1, 0, known[6] or 'unknown'
    end
  end
  local seq = known[1]
  local ready = math.max(tonumber(known[2]) or -1, tonumber(known[3]) or -1)
  local waited = -1
  if ready >= 0 then waited = math.max(now - ready, 0) end
  local attempt = (tonumber(known[4]) or 0) + 1
  local attempt_s = tostring(attempt)
  if known[4] then
    redis.call('HSET', key, 'attempts', attempt_s, 'state', 'running', 'started_at', now_s,
      'worker', ARGV[2], 'lease', attempt_s)
  else
    -- The record starts here. The args shown are re-encoded by Redis's JSON
    -- library; the job runs with the payload's own.
    job = job or decode(payload) or {}
    local encoded, args = pcall(cjson.encode, job.args)
    if not encoded or job.args == nil then args = 'null' end
    redis.call('HSET', key, 'attempts', attempt_s, 'state', 'running', 'started_at', now_s,
      'worker', ARGV[2], 'lease', attempt_s, 'id', id, 'class', tostring(job.class),
      'queue', ARGV[4], 'args', args, 'enqueued_at', now_s)
    if token ~= '0' then redis.call('HSET', key, 'token', token) end
  end
  if seq then redis.call('HINCRBY', key, 'resumed', 1) end
  local batch = 0
  if known[5] then batch = 1 end
  -- `stalls` is COUNT:SEQ, the checkpoint they were counted at: they count
  -- only while no checkpoint came since.
  local stalls = 0
  if known[8] then
    local n, at = string.match(known[8], '^(%d+):(%d+)$')
    if n and at == (seq or '0') then stalls = tonumber(n) end
  end
  return attempt, id, seq or 0, waited, batch, '', stalls
end

local nonce = ARGV[5] or ''
if nonce ~= '' then
  local last = redis.call('GET', KEYS[4])
  if last and string.sub(last, 1, #nonce + 1) == nonce .. '\n' then
    return cmsgpack.unpack(string.sub(last, #nonce + 2))
  end
end
local out = {}
if redis.call('EXISTS', KEYS[3]) == 1 then return out end
for _ = 1, tonumber(ARGV[1]) do
  local payload = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not payload then break end
  local ok, attempt, id, seq, waited, batch, duplicate, stalls = pcall(start, payload)
  if not ok then attempt, id, seq, waited, batch, duplicate, stalls = 0, '', 0, -1, 0, '', 0 end
  out[#out + 1] = payload
  out[#out + 1] = attempt
  out[#out + 1] = id
  out[#out + 1] = seq or 0
  out[#out + 1] = waited or -1
  out[#out + 1] = batch or 0
  out[#out + 1] = duplicate or ''
  out[#out + 1] = stalls or 0
end
if nonce ~= '' and #out > 0 then
  redis.call('SET', KEYS[4], nonce .. '\n' .. cmsgpack.pack(out), 'EX', 60)
end
return out
