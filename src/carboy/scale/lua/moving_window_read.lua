-- limits' moving-window read step, on the Redis server's clock (TIME).
-- KEYS[1]: the window's list of entry timestamps, newest first.
-- ARGV: expiry (seconds), limit (the list's longest length).
-- Returns {oldest entry in the window (string), entries in the window, server time (string)}.
local expiry = tonumber(ARGV[1])
local len = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local since = now - expiry
-- The list is newest first: find the last index whose entry is still in the window.
local low, high, found = 0, len - 1, nil
while low <= high do
    local mid = math.floor((low + high) / 2)
    local value = tonumber(redis.call('LINDEX', KEYS[1], mid))
    if value and value >= since then
        found = mid
        low = mid + 1
    else
        high = mid - 1
    end
end
local stamp = string.format('%.6f', now)
if found then
    return {redis.call('LINDEX', KEYS[1], found), found + 1, stamp}
end
return {stamp, 0, stamp}
