-- cache_extend: keep a recompute lock alive while its holder computes.
-- KEYS[1] the lock; ARGV[1] the holder's token, ARGV[2] the new TTL in milliseconds.
-- Extends the lock only if the token still holds it. Returns 1 if extended, else 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
  return 1
end
return 0
