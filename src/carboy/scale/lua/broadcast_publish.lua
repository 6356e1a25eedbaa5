-- Publish one message of the pub/sub broadcast backend with the channel's next sequence number,
-- in one atomic step, so that sequence numbers reach subscribers in order and a subscriber that
-- sees one jump (or finds the counter ahead after reconnecting) knows how many it missed.
-- KEYS[1]  the channel's sequence key
-- ARGV[1]  the Redis channel
-- ARGV[2]  the payload: its kind (one byte: s text, b bytes) then the data
-- ARGV[3]  milliseconds the sequence key lives after this publish (0: forever)
-- Returns the message's sequence number.
local n = redis.call('INCR', KEYS[1])
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
redis.call('PUBLISH', ARGV[1], n .. ':' .. ARGV[2])
return n
