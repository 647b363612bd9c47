-- bucket_ban. KEYS[1] bucket. ARGV[1] duration ms, ARGV[2] capacity, ARGV[3] interval ms.
-- Keeps (or creates) the points and window and bans for the duration. Returns 1.
local now = uwsx_now()
local duration = tonumber(ARGV[1])
local points = tonumber(redis.call('ZSCORE', KEYS[1], 'p') or ARGV[2])
local reset_at = tonumber(redis.call('ZSCORE', KEYS[1], 'r') or (now + tonumber(ARGV[3])))
redis.call('ZADD', KEYS[1], points, 'p', reset_at, 'r', now + duration, 'b')
redis.call('PEXPIRE', KEYS[1], uwsx_int(duration + 60000))
return 1
