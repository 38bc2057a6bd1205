-- A payload's id and token (see job.rs: "One id, one job"), included by the
-- scripts that take payloads off a list. Payloads written by Stoker start
-- with the id, the class and, when it has one, the token: those are read
-- without decoding the payload. Anything else is decoded.
-- Returns id (nil: none that can name a record), token ('0' when absent),
-- and the decoded payload when it was decoded (nil otherwise).
local function ident(payload)
  local id, at = string.match(payload, '^{"id":"([%w_%-]+)","class":"[^"]*"()')
  if id then
    local token = '0'
    -- 116: the `t` of `,"token":` (a payload without one goes on with `,"args"`).
    if string.byte(payload, at + 2) == 116 and string.sub(payload, at, at + 8) == ',"token":' then
      token = string.match(payload, '^%d+', at + 9) or '0'
    end
    if #id > 64 then return nil, '0', nil end
    return id, token, nil
  end
  local ok, job = pcall(cjson.decode, payload)
  if not ok or type(job) ~= 'table' then return nil, '0', nil end
  if type(job.id) ~= 'string' or #job.id > 64 or not string.match(job.id, '^[%w_%-]+$') then
    return nil, '0', job
  end
  local token = '0'
  if job.token ~= nil then token = tostring(job.token) end
  return job.id, token, job
end
