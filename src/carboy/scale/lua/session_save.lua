-- Merge one request's changes into a server-side session, atomically: only the fields the
-- request set or deleted are written, so concurrent requests touching other fields keep
-- theirs. With no fields to set or delete it only refreshes the TTL (sliding expiry).
-- KEYS[1]  the session hash
-- ARGV[1]  sliding lifetime in ms
-- ARGV[2]  absolute lifetime in ms (0: none), counted from the creation field
-- ARGV[3]  "1": the session must still exist (it was loaded from Redis); if it is gone
--          (revoked, regenerated, expired) nothing is written
-- ARGV[4]  "1": the request cleared the session: drop every field first
-- ARGV[5]  the name of the creation field (ms since the epoch, on Redis's clock)
-- ARGV[6]  the creation time to keep for a new key (ms; "0": now), for regenerated ids
-- ARGV[7]  n, the number of fields to set; then n field/value pairs; then fields to delete
-- Returns 1 saved, 0 deleted (nothing left in it), -1 gone (nothing written).
local key = KEYS[1]
local lifetime = tonumber(ARGV[1])
local absolute = tonumber(ARGV[2])
local cfield = ARGV[5]
if ARGV[3] == '1' and redis.call('EXISTS', key) == 0 then
  return -1
end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local created = redis.call('HGET', key, cfield)
local write_created = ARGV[4] == '1'
if not created then
  write_created = true
  created = ARGV[6]
  if created == '0' then
    created = tostring(now_ms)
  end
end
if ARGV[4] == '1' then
  redis.call('DEL', key)
end
local n = tonumber(ARGV[7])
local i = 8
for _ = 1, n do
  redis.call('HSET', key, ARGV[i], ARGV[i + 1])
  i = i + 2
end
while i <= #ARGV do
  redis.call('HDEL', key, ARGV[i])
  i = i + 1
end
if write_created then
  redis.call('HSET', key, cfield, created)
end
if redis.call('HLEN', key) <= 1 then
  redis.call('DEL', key)
  return 0
end
local ttl = lifetime
if absolute > 0 then
  ttl = math.min(ttl, tonumber(created) + absolute - now_ms)
end
if ttl <= 0 then
  redis.call('DEL', key)
  return 0
end
redis.call('PEXPIRE', key, ttl)
return 1
