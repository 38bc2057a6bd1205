#!lua
-- Takes a part that was applied, or refused, off its queue's outbox (see
-- queue/parts.rs). A refused part (its body no longer fits the keys it
-- writes: another client changed a key's type between the worker's check and
-- the apply) is kept, with the reason, in the queue's list of refused parts,
-- the newest first, capped.
-- KEYS[1] the queue's outbox, KEYS[2] its refused parts, KEYS[3] the record
-- of the part's job (KEYS[1] again for an entry that is not a part): its
-- count of parts waiting (commit.lua) goes down by one.
-- ARGV[1] the part, ARGV[2] why it was refused ('' when applied), ARGV[3]
-- most refused parts kept.
-- Returns how many entries were taken off (0: another node took it first).
local taken = redis.call('LREM', KEYS[1], 1, ARGV[1])
if taken > 0 and ARGV[2] ~= '' then
  redis.call('LPUSH', KEYS[2], ARGV[2] .. '\n' .. ARGV[1])
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
end
if taken > 0 and KEYS[3] ~= KEYS[1] and redis.call('EXISTS', KEYS[3]) == 1 then
  if redis.call('HINCRBY', KEYS[3], 'parts_waiting', -1) <= 0 then
    redis.call('HDEL', KEYS[3], 'parts_waiting')
  end
end
return taken
