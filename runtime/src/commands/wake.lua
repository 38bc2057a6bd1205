-- Wake-ups (see queue::wake), included by every script that pushes onto a
-- pending list: the workers idle on a queue fetch at once, instead of at
-- their next poll, when its pending list `list` gets jobs.
-- On Redis Cluster the message is sharded (`SPUBLISH`: it goes to the
-- subscribers on the nodes of the channel's slot, which is the queue's), a
-- classic `PUBLISH` would be broadcast to every node of the cluster; elsewhere
-- classic. Asked of the server at the first announcement of a call only.
local sharded
local function announce(list)
  local channel = string.gsub(list, ':pending$', ':wake')
  if sharded == nil then
    sharded = string.find(redis.call('INFO', 'cluster'), 'cluster_enabled:1', 1, true) ~= nil
  end
  if sharded then
    redis.call('SPUBLISH', channel, '')
  else
    redis.call('PUBLISH', channel, '')
  end
end
-- After a push that left `list` `len` long: announced when it was empty.
local function wake(list, len)
  if len == 1 then announce(list) end
end
