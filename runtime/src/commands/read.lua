#!lua flags=no-writes
-- One read of the `stoker:job/redis` interface, measured inside Redis: the
-- reply is sent only when its size fits the bytes the attempt has left of its
-- reply quota, so the worker never receives (or buffers) more than that.
-- KEYS[1] the key; ARGV[1] the command (one of those below; the host picks it,
-- the guest never names one); ARGV[2] bytes left; ARGV[3] what each element of
-- an array reply costs besides its payload; ARGV[4..] the command's arguments
-- after the key.
-- Size: the bytes of every string in the reply, plus ARGV[3] per element (a
-- score counts 8 bytes, as the host counts it). Refused: the error reply
-- `STOKER_QUOTA <size>`, where <size> is what was measured when the reply went
-- past the budget (the whole reply was not necessarily measured). A Redis
-- error (WRONGTYPE) is returned as Redis gave it.
-- GET and HGET measure with STRLEN and HSTRLEN before reading the value, and
-- LRANGE reads its range in pages, so Redis does not copy more than one page
-- past the budget either.
local key, cmd = KEYS[1], ARGV[1]
local left, per = tonumber(ARGV[2]), tonumber(ARGV[3])
local function refuse(size)
  return redis.error_reply('STOKER_QUOTA ' .. string.format('%d', size))
end
local function failed(r)
  return type(r) == 'table' and r.err ~= nil
end

if cmd == 'GET' or cmd == 'HGET' then
  local n
  if cmd == 'GET' then
    n = redis.pcall('STRLEN', key)
  else
    n = redis.pcall('HSTRLEN', key, ARGV[4])
  end
  if failed(n) then return n end
  if n > left then return refuse(n) end
  if cmd == 'GET' then return redis.pcall('GET', key) end
  return redis.pcall('HGET', key, ARGV[4])
end

if cmd == 'LRANGE' then
  local len = redis.pcall('LLEN', key)
  if failed(len) then return len end
  local start, stop = tonumber(ARGV[4]), tonumber(ARGV[5])
  if start < 0 then start = math.max(len + start, 0) end
  if stop < 0 then stop = len + stop end
  if stop >= len then stop = len - 1 end
  local out, size, i = {}, 0, start
  while i <= stop do
    local last = math.min(i + 63, stop)
    local page = redis.call('LRANGE', key, string.format('%d', i), string.format('%d', last))
    for _, v in ipairs(page) do
      size = size + #v + per
      if size > left then return refuse(size) end
      out[#out + 1] = v
    end
    i = last + 1
  end
  return out
end

local reply
if cmd == 'HGETALL' or cmd == 'SMEMBERS' then
  reply = redis.pcall(cmd, key)
elseif cmd == 'SSCAN' then
  reply = redis.pcall('SSCAN', key, ARGV[4], 'COUNT', ARGV[5])
elseif cmd == 'ZRANGEBYSCORE' then
  reply = redis.pcall('ZRANGEBYSCORE', key, ARGV[4], ARGV[5], 'WITHSCORES', 'LIMIT', 0, ARGV[6])
else
  return redis.error_reply('ERR read.lua: unknown read ' .. tostring(cmd))
end
if failed(reply) then return reply end
local size = 0
if cmd == 'HGETALL' then
  -- field, value, field, value, ...: one element per pair
  for k = 1, #reply, 2 do size = size + #reply[k] + #reply[k + 1] + per end
elseif cmd == 'SMEMBERS' then
  for _, v in ipairs(reply) do size = size + #v + per end
elseif cmd == 'SSCAN' then
  for _, v in ipairs(reply[2]) do size = size + #v + per end
else
  -- member, score, member, score, ...
  for k = 1, #reply, 2 do size = size + #reply[k] + 8 + per end
end
if size > left then return refuse(size) end
return reply
