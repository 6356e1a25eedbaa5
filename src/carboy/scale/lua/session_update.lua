-- An atomic change of one session field on the server: add to an integer ("incr"), or
-- append a JSON item to a JSON array ("append"). Creates the session when it is new.
-- KEYS[1]  the session hash
-- ARGV[1]  "incr" or "append"
-- ARGV[2]  the field
-- ARGV[3]  the integer to add, or the item's JSON text to append
-- ARGV[4]  sliding lifetime in ms
-- ARGV[5]  absolute lifetime in ms (0: none)
-- ARGV[6]  "1": the session must still exist (it was loaded from Redis)
-- ARGV[7]  the name of the creation field
-- Returns {1, new value} (an integer, or the new JSON text), or {-1} when the session is gone.
-- Errors: "not an integer" / "not a list" when the field holds another kind of value.
local key = KEYS[1]
local field = ARGV[2]
if ARGV[6] == '1' and redis.call('EXISTS', key) == 0 then
  return {-1}
end
local value
if ARGV[1] == 'incr' then
  local current = redis.call('HGET', key, field)
  if current and not string.match(current, '^%-?%d+$') then
    return redis.error_reply('not an integer')
  end
  value = redis.call('HINCRBY', key, field, ARGV[3])
else
  local current = redis.call('HGET', key, field)
  if not current or current == '[]' then
    value = '[' .. ARGV[3] .. ']'
  elseif string.sub(current, 1, 1) == '[' and string.sub(current, -1) == ']' then
    value = string.sub(current, 1, -2) .. ',' .. ARGV[3] .. ']'
  else
    return redis.error_reply('not a list')
  end
  redis.call('HSET', key, field, value)
end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('HSETNX', key, ARGV[7], tostring(now_ms))
local ttl = tonumber(ARGV[4])
local absolute = tonumber(ARGV[5])
if absolute > 0 then
  local created = tonumber(redis.call('HGET', key, ARGV[7]))
  ttl = math.min(ttl, created + absolute - now_ms)
end
if ttl <= 0 then
  redis.call('DEL', key)
  return {-1}
end
redis.call('PEXPIRE', key, ttl)
return {1, value}
