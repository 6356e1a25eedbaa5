-- limits' moving-window acquire step, on the Redis server's clock (TIME), not the caller's.
-- KEYS[1]: the window's list of entry timestamps, newest first.
-- ARGV: limit, expiry (seconds), amount (entries to take).
-- Returns 1 when the entries were taken, nil when the window is full.
redis.replicate_commands()
local limit = tonumber(ARGV[1])
local expiry = tonumber(ARGV[2])
local amount = tonumber(ARGV[3])
if amount > limit then
    return nil
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local entry = redis.call('LINDEX', KEYS[1], limit - amount)
if entry and tonumber(entry) >= now - expiry then
    return nil
end
local stamp = string.format('%.6f', now)
for _ = 1, amount do
    redis.call('LPUSH', KEYS[1], stamp)
end
redis.call('LTRIM', KEYS[1], 0, limit - 1)
redis.call('EXPIRE', KEYS[1], expiry)
return 1
