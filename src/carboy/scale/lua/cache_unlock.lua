-- cache_unlock: release a recompute lock without storing (the computation failed or its
-- result was filtered out). KEYS[1] the lock; ARGV[1] the holder's token.
-- Deletes the lock only if the token still matches. Returns 1 if released, else 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
