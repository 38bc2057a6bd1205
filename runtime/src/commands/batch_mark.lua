#!lua
-- Marks a batch's callback enqueued, when the batch still exists (its keys
-- may have expired since the callback was decided).
-- KEYS[1] batch hash; ARGV[1] the event ('success', 'complete'), ARGV[2] the
-- callback job's id, kept in field `EVENT_enqueued`.
-- Returns 0.
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], ARGV[1] .. '_enqueued', ARGV[2]) end
return 0
