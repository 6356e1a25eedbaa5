-- Release a session lock only if this request still holds it (compare and delete): a lock
-- that expired and was taken by another request is left alone.
-- KEYS[1]  the lock key
-- ARGV[1]  this request's token
-- Returns 1 released, 0 not held by this token.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
