#!lua
-- Applies settled jobs to their batch and decides its callbacks, each once.
-- Completion is kept in sets of job ids, not counters: a job applied twice (a
-- settle replayed after a crash, an outbox entry applied by two nodes) changes
-- nothing the second time. A callback fires when its guard field (`success_at`,
-- `complete_at`) is set, in this same step: never twice.
-- KEYS[1] batch hash, KEYS[2] jobs set, KEYS[3] done set, KEYS[4] dead set
-- ARGV[1] TTL (s) of a finished batch's keys, ARGV[2] most dead ids listed in a
-- callback's args, ARGV[3] '1': seal the batch (all its jobs are in; its
-- callbacks may fire from now on), then pairs: job id, 'done' | 'dead'.
-- A done job leaves the dead set (a dead job retried by hand and done since);
-- a dead job that is already done stays done.
-- Returns the callbacks decided and not yet marked enqueued, flat:
-- event, queue, payload, event, queue, payload, ...
--@include now
local meta, jobs, done, dead = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if redis.call('EXISTS', meta) == 0 then return {} end
for i = 4, #ARGV, 2 do
  local id, what = ARGV[i], ARGV[i + 1]
  if redis.call('SISMEMBER', jobs, id) == 1 then
    if what == 'done' then
      redis.call('SADD', done, id)
      redis.call('SREM', dead, id)
    elseif redis.call('SISMEMBER', done, id) == 0 then
      redis.call('SADD', dead, id)
    end
  end
end
if ARGV[3] == '1' and redis.call('HSETNX', meta, 'sealed', now) == 1 then
  redis.call('HSET', meta, 'total', redis.call('SCARD', jobs))
end
if redis.call('HEXISTS', meta, 'sealed') == 1 then
  local total = redis.call('SCARD', jobs)
  local nd, nx = redis.call('SCARD', done), redis.call('SCARD', dead)
  local bid = redis.call('HGET', meta, 'id')
  local function fire(event)
    local class = redis.call('HGET', meta, event .. '_class')
    if not class or redis.call('HSETNX', meta, event .. '_at', now) == 0 then return end
    local ids = redis.call('SRANDMEMBER', dead, tonumber(ARGV[2]))
    table.sort(ids)
    local quoted = {}
    for k, v in ipairs(ids) do quoted[k] = '"' .. v .. '"' end
    -- Ids and class names are letters, digits, '-' and '_'; the args are
    -- JSON as given at creation: the payload is built as text.
    local payload = '{"id":"' .. redis.call('HGET', meta, event .. '_id') .. '","class":"' ..
      class .. '","args":{"batch":"' .. bid .. '","event":"' .. event .. '","total":' ..
      total .. ',"done":' .. nd .. ',"dead":' .. nx .. ',"dead_ids":[' ..
      table.concat(quoted, ',') .. '],"args":' .. redis.call('HGET', meta, event .. '_args') ..
      '}'
    -- The callback's depth in its job tree (the creator's + 1, see host/batch.rs).
    local depth = redis.call('HGET', meta, 'depth')
    if depth and string.match(depth, '^%d+$') then payload = payload .. ',"depth":' .. depth end
    payload = payload .. '}'
    redis.call('HSET', meta, event .. '_payload', payload)
  end
  if nd == total then fire('success') end
  if nd + nx == total then
    fire('complete')
    local ttl = tonumber(ARGV[1])
    for _, k in ipairs(KEYS) do redis.call('EXPIRE', k, ttl) end
  end
end
local out = {}
for _, event in ipairs({'success', 'complete'}) do
  local payload = redis.call('HGET', meta, event .. '_payload')
  if payload and redis.call('HEXISTS', meta, event .. '_enqueued') == 0 then
    out[#out + 1] = event
    out[#out + 1] = redis.call('HGET', meta, event .. '_queue')
    out[#out + 1] = payload
  end
end
return out
