-- Wake-ups (see queue::wake), included by every script that pushes onto a
-- pending list: the workers idle on a queue fetch at once, instead of at
-- their next poll, when its pending list `list` gets jobs.
local function announce(list)
  redis.call('PUBLISH', (string.gsub(list, ':pending$', ':wake')), '')
end
-- After a push that left `list` `len` long: announced when it was empty.
local function wake(list, len)
  if len == 1 then announce(list) end
end
