-- Lease acquire / seize. KEYS[1] lease (string "<fence>:<owner>" with a TTL), KEYS[2] fence
-- counter (never expires). ARGV[1] owner, ARGV[2] ttl ms, ARGV[3] '1' to seize (replace any
-- holder). Returns the new fence, or nil when a live lease exists and this is no seize.
if ARGV[3] ~= '1' and redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], fence .. ':' .. ARGV[1], 'PX', ARGV[2])
return fence
