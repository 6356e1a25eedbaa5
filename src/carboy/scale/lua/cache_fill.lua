-- cache_fill: store a computed cache entry and release the recompute lock, in one step.
-- KEYS[1] the entry, KEYS[2] its lock (same hash slot); ARGV[1] the serialized entry,
-- ARGV[2] the entry's TTL in milliseconds ("0": no expiry), ARGV[3] the lock holder's token.
-- The lock is deleted only if this caller still holds it (a lock that expired and was taken
-- over by another caller is left to that caller). Returns 1 if the lock was released, else 0.
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[1])
end
if redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
