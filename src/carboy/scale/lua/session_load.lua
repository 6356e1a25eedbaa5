-- Load one server-side session: its remaining TTL and every field, or nothing.
-- KEYS[1]  the session hash
-- ARGV[1]  absolute lifetime in ms (0: none), counted from the creation field
-- ARGV[2]  the name of the creation field (ms since the epoch, on Redis's clock)
-- Returns {} when the session does not exist or outlived its absolute lifetime (it is then
-- deleted), else {pttl, field1, value1, field2, value2, ...}.
local key = KEYS[1]
local absolute = tonumber(ARGV[1])
if absolute > 0 then
  local created = redis.call('HGET', key, ARGV[2])
  if created then
    local now = redis.call('TIME')
    local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
    if now_ms - tonumber(created) >= absolute then
      redis.call('DEL', key)
      return {}
    end
  end
end
local pttl = redis.call('PTTL', key)
if pttl == -2 then
  return {}
end
local fields = redis.call('HGETALL', key)
table.insert(fields, 1, pttl)
return fields
