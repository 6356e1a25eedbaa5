-- Every limit of one request in one round trip, on the Redis server's clock.
--
-- The steps are those of the limits library's Redis storage (same keys, same data), so its
-- strategies read and clear what this script writes:
--   fixed window   ("f"): KEYS: the counter             (INCRBY + EXPIRE, as incr_expire.lua)
--   moving window  ("m"): KEYS: the list of timestamps  (as acquire_moving_window.lua, but TIME)
--   sliding window ("s"): KEYS: previous, current count (as acquire_sliding_window.lua)
-- ARGV[1]: 1 to stop at the first breached limit (later limits are not hit), else 0.
-- Then five ARGV per limit, in order: kind, limit, expiry (s), cost, mode ("h" hit, "t" test).
-- Returns three integers per limit: status (1 allowed, 0 breached, -1 not evaluated),
-- remaining after this request, and milliseconds until the window frees an entry.
redis.replicate_commands()
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local stop_on_breach = ARGV[1] == '1'
local out = {}
local k = 1
local breached = false

local function fixed(key, limit, expiry, cost, hit)
    local count
    if hit then
        count = redis.call('INCRBY', key, cost)
        if count == cost then
            redis.call('EXPIRE', key, expiry)
        end
    else
        count = tonumber(redis.call('GET', key)) or 0
    end
    local ok
    if hit then ok = count <= limit else ok = count + cost <= limit end
    local ttl = redis.call('PTTL', key)
    if ttl < 0 then ttl = expiry * 1000 end
    return ok, math.max(0, limit - count), ttl
end

local function window_entries(key, limit, expiry)
    -- newest first: binary search for the last entry still in the window
    local since = now - expiry
    local low, high, found = 0, limit - 1, nil
    while low <= high do
        local mid = math.floor((low + high) / 2)
        local value = tonumber(redis.call('LINDEX', key, mid))
        if value and value >= since then
            found = mid
            low = mid + 1
        else
            high = mid - 1
        end
    end
    if found then
        return found + 1, tonumber(redis.call('LINDEX', key, found))
    end
    return 0, nil
end

local function moving(key, limit, expiry, cost, hit)
    local ok = cost <= limit
    if ok and hit then
        local entry = redis.call('LINDEX', key, limit - cost)
        if entry and tonumber(entry) >= now - expiry then
            ok = false
        else
            local stamp = string.format('%.6f', now)
            for _ = 1, cost do
                redis.call('LPUSH', key, stamp)
            end
            redis.call('LTRIM', key, 0, limit - 1)
            redis.call('EXPIRE', key, expiry)
        end
    end
    local count, oldest = window_entries(key, limit, expiry)
    if ok and not hit then ok = count <= limit - cost end
    local reset = expiry * 1000
    if oldest then reset = math.ceil((oldest + expiry - now) * 1000) end
    return ok, math.max(0, limit - count), reset
end

local function sliding(previous, current, limit, expiry, cost, hit)
    local span = expiry * 1000
    local current_ttl = tonumber(redis.call('PTTL', current))
    if current_ttl > 0 and current_ttl < span then
        -- the current window has ended: it becomes the previous one
        redis.call('RENAME', current, previous)
        redis.call('SET', current, 0, 'PX', current_ttl + span)
    end
    local previous_count = tonumber(redis.call('GET', previous)) or 0
    local previous_ttl = math.max(0, tonumber(redis.call('PTTL', previous)) or 0)
    local current_count = tonumber(redis.call('GET', current)) or 0
    current_ttl = math.max(0, tonumber(redis.call('PTTL', current)) or 0)
    local weighted = math.floor(previous_count * previous_ttl / span) + current_count
    local ok = weighted + cost <= limit
    if ok and hit then
        if redis.call('EXISTS', current) == 1 then
            redis.call('INCRBY', current, cost)
        else
            redis.call('SET', current, cost, 'PX', span * 2)
            current_ttl = span * 2
        end
        current_count = current_count + cost
        weighted = weighted + cost
    end
    local reset = 0
    if previous_count > 0 then reset = previous_ttl % (span / previous_count) end
    if current_count > 0 then
        local own = current_ttl % span
        if previous_count == 0 or own < reset then reset = own end
    end
    return ok, math.max(0, limit - weighted), math.ceil(reset)
end

local a = 2
while a <= #ARGV do
    local kind, limit, expiry = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
    local cost, hit = tonumber(ARGV[a + 3]), ARGV[a + 4] == 'h'
    a = a + 5
    local width = 1
    if kind == 's' then width = 2 end
    if breached and stop_on_breach then
        out[#out + 1] = -1
        out[#out + 1] = 0
        out[#out + 1] = 0
    else
        local ok, remaining, reset
        if kind == 'f' then
            ok, remaining, reset = fixed(KEYS[k], limit, expiry, cost, hit)
        elseif kind == 'm' then
            ok, remaining, reset = moving(KEYS[k], limit, expiry, cost, hit)
        else
            ok, remaining, reset = sliding(KEYS[k], KEYS[k + 1], limit, expiry, cost, hit)
        end
        if ok then out[#out + 1] = 1 else out[#out + 1] = 0; breached = true end
        out[#out + 1] = remaining
        out[#out + 1] = reset
    end
    k = k + width
end
return out
