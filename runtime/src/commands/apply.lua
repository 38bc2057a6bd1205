#!lua
-- Applies one part of a commit in its own hash slot, once (Redis Cluster: a
-- commit writes what lives in other slots as parts to its queue's outbox;
-- see queue/parts.rs). The part's marker, a key in the part's slot, says it
-- was applied: a part applied again (its outbox entry left by a crash, or
-- applied by two nodes at once) changes nothing. A part is checked whole, as
-- a commit's body is, before any of it is written.
-- KEYS[1] the part's marker, then the keys its body names.
-- ARGV[1] 'check' (only the passes that read; the worker checks a commit's
-- parts before it commits) or 'apply', ARGV[2] the marker's TTL (s), ARGV[3]
-- the id of the job whose commit it is, then the body (see the `body` piece).
-- Returns 'ok' (applied now, or would apply), 'applied' (its marker is
-- there: applied before) or 'bad_write:REASON' (nothing written).
--@include wake
--@include now
--@include body
local apply = ARGV[1] == 'apply'
if apply and redis.call('EXISTS', KEYS[1]) == 1 then return 'applied' end
local why = refused(function()
  local after = body_envelope(4)
  if after ~= nargv + 1 then
    refuse('malformed commit envelope: ' .. (nargv + 1 - after) .. ' arguments left over')
  end
  body_check()
end)
if why then return 'bad_write:' .. why end
if not apply then return 'ok' end
body_apply(ARGV[3])
redis.call('SET', KEYS[1], '1', 'EX', tonumber(ARGV[2]))
return 'ok'
