-- cache_lock: take an entry's recompute lock unless the entry is (now) fresh, in one step.
-- KEYS[1] the entry, KEYS[2] its lock (same hash slot); ARGV[1] the caller's token,
-- ARGV[2] the lock's TTL in milliseconds, ARGV[3] the stale window in milliseconds: an entry
-- whose remaining TTL is at most this is stale (0 for none).
-- Returns {1} if the lock was taken, {0} if another caller holds it, and {2, value} if the
-- entry is fresh (another caller filled it since this one read it: no recompute).
local value = redis.call('GET', KEYS[1])
if value then
  local left = redis.call('PTTL', KEYS[1])
  if left == -1 or left > tonumber(ARGV[3]) then
    return {2, value}
  end
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', tonumber(ARGV[2])) then
  return {1}
end
return {0}
