#!lua
-- Commits a checkpoint, or a job's completion, with its body (child jobs,
-- batches and staged Redis writes: see the `body` piece) in one atomic step.
-- Idempotent: a commit retried after its reply was lost finds its sequence
-- already recorded and changes nothing. All or nothing: nothing is written
-- until the whole body is proved to apply ('bad_write:REASON' otherwise). The
-- shebang (`#!lua`, the first line, which stays first when the includes are
-- resolved) makes Redis refuse the whole script up front when it is out of
-- memory, instead of failing at the first write.
--
-- On Redis Cluster a commit keeps to the job's queue slot: what lives in
-- other slots goes as parts to the queue's outbox, in this same step, each
-- applied in its own slot once afterwards (queue/parts.rs, `apply`).
--
-- KEYS[1] job record, KEYS[2] snapshot, KEYS[3] the worker's in-flight list,
-- KEYS[4] stats hash, KEYS[5] the queue's batch outbox, KEYS[6] the queue's
-- outbox of parts, then the keys the body names.
-- ARGV[1] mode: 'checkpoint' (snapshot stored, the job goes on) or 'done'
--   (result recorded, the job leaves the in-flight list, its snapshot is deleted)
-- ARGV[2] lease (the attempt number the fetch recorded), ARGV[3] sequence of
-- this commit (the last committed one + 1), ARGV[4] snapshot (checkpoint) or
-- the payload as fetched (done), ARGV[5] done record TTL (s), ARGV[6] field
-- count, field, value, ..., then the body, then the count of parts for the
-- outbox and the parts (opaque here), then the count of the commit's children
-- that are in those parts.
-- The job's record counts its committed children (`children`, across all its
-- commits); a job finishing ('done') whose record names a batch is added to
-- the batch outbox (see settle.lua).
-- The record counts its parts not yet taken off the outbox
-- (`parts_waiting`; part_done.lua counts them down).
-- Returns 'ok', 'behind' (written, and earlier parts of this job still wait
-- in the outbox: this commit's parts must apply after them), 'applied' (this
-- sequence was already committed),
-- 'lease_lost' (the job was recovered from this attempt; nothing written) or
-- 'bad_write:REASON' (a staged write cannot apply; nothing written).
--@include wake
--@include now
--@include body
local rec = KEYS[1]
local mode, seq = ARGV[1], tonumber(ARGV[3])
local held = redis.call('HMGET', rec, 'lease', 'seq')
if held[1] ~= ARGV[2] then return 'lease_lost' end
if tonumber(held[2] or '0') >= seq then return 'applied' end
if mode == 'done' and not redis.call('LPOS', KEYS[3], ARGV[4]) then
  return 'lease_lost'
end

local first, last, parts_at, nparts, remote
local why = refused(function()
  local nfields = num(6, nargv)
  first, last = 7, 6 + nfields * 2
  parts_at = body_envelope(last + 1)
  nparts = num(parts_at, nargv)
  -- A count, not an index: a part is one argument however many children
  -- it carries, so the children in the parts may outnumber the arguments.
  remote = num(parts_at + nparts + 1)
  if parts_at + nparts + 1 ~= nargv then
    refuse('malformed commit envelope: ' .. (nargv - parts_at - nparts - 1) .. ' arguments left over')
  end
  body_check()
end)
if why then return 'bad_write:' .. why end

local parent = string.match(rec, 'job:([%w_%-]+)$')
body_apply(parent)
local behind = false
if nparts > 0 then
  sliced('RPUSH', KEYS[6], parts_at + 1, parts_at + nparts)
  behind = redis.call('HINCRBY', rec, 'parts_waiting', nparts) > nparts
end
if nchildren + remote > 0 then redis.call('HINCRBY', rec, 'children', nchildren + remote) end

if mode == 'checkpoint' then
  redis.call('SET', KEYS[2], ARGV[4])
  redis.call('HSET', rec, 'seq', seq, 'checkpointed_at', now, 'crashes', 0)
else
  redis.call('LREM', KEYS[3], -1, ARGV[4])
  redis.call('DEL', KEYS[2])
  redis.call('HSET', rec, 'seq', seq, 'state', 'done', 'finished_at', now)
end
sliced('HSET', rec, first, last)
if mode == 'done' then
  redis.call('EXPIRE', rec, tonumber(ARGV[5]))
  redis.call('HINCRBY', KEYS[4], 'processed', 1)
  local batch = redis.call('HGET', rec, 'batch')
  if batch then redis.call('SADD', KEYS[5], batch .. ' ' .. parent .. ' done') end
end
if behind then return 'behind' end
return 'ok'
