-- Lease acquire / seize. KEYS[1] lease (string "<fence>:<owner>" with a TTL), KEYS[2] fence
-- counter (never expires). ARGV[1] owner, ARGV[2] ttl ms, ARGV[3] '1' to seize (replace any
-- holder). Returns the new fence, or nil when a live lease exists and this is no seize.
--
-- The fence is a hybrid-logical-clock value: max(counter + 1, server TIME in microseconds),
-- stored back as the counter. The counter makes fences strictly increase per key; the clock
-- keeps them above every fence issued before when the counter's latest writes are lost (a
-- failover to a replica the asynchronous replication had not reached, a restart without
-- persistence). TIME before a write needs effects replication (the default on Redis 5, the
-- only mode on Redis 7 and Valkey): replicas receive the SET of the computed value.
if ARGV[3] ~= '1' and redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local fence = (tonumber(redis.call('GET', KEYS[2]) or '0') or 0) + 1
if now > fence then
  fence = now
end
-- %d keeps every digit: tostring() would print a number this large in exponent form.
local text = string.format('%d', fence)
redis.call('SET', KEYS[2], text)
redis.call('SET', KEYS[1], text .. ':' .. ARGV[1], 'PX', ARGV[2])
return fence
