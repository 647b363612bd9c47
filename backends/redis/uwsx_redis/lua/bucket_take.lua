-- bucket_take: fixed-window token bucket on the server clock. A bucket is a small sorted set
-- of three named numbers (p = points, r = window reset ms, b = banned until ms), so string and
-- map operations on it fail with WRONGTYPE like on any other kind mismatch.
-- KEYS[1] bucket. ARGV[1] capacity, ARGV[2] interval ms, ARGV[3] cost, ARGV[4] block ms.
-- Returns {allowed 0/1, remaining points, ms until the window resets or the ban ends}.
local now = uwsx_now()
local cap, interval = tonumber(ARGV[1]), tonumber(ARGV[2])
local cost, block = tonumber(ARGV[3]), tonumber(ARGV[4])
local grace = 60000
local points, reset_at, banned
local p = redis.call('ZSCORE', KEYS[1], 'p')
if p then
  points = tonumber(p)
  reset_at = tonumber(redis.call('ZSCORE', KEYS[1], 'r') or now)
  banned = tonumber(redis.call('ZSCORE', KEYS[1], 'b') or 0)
else
  points, reset_at, banned = cap, now + interval, 0
end
if banned > now then
  return {0, 0, banned - now}
end
if reset_at <= now then
  points, reset_at = cap, now + interval
end
local function save(ttl)
  redis.call('ZADD', KEYS[1], points, 'p', reset_at, 'r', banned, 'b')
  redis.call('PEXPIRE', KEYS[1], uwsx_int(ttl))
end
if points >= cost then
  points = points - cost
  save(interval + block + grace)
  return {1, points, reset_at - now}
end
if block > 0 then
  banned = now + block
  save(block + grace)
  return {0, 0, block}
end
save(interval + grace)
return {0, math.max(0, points), reset_at - now}
