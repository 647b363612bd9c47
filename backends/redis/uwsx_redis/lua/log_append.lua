-- SortedLog append. KEYS[1] counter hash {seq, epoch} (never expires), KEYS[2] entries
-- (sorted set, score = seq). ARGV[1] encoded entry tail (see uwsx_redis.logs), ARGV[2] max
-- entries kept, ARGV[3] entries TTL ms or ''.
-- Returns the new seq. Increment, add, trim and TTL happen in one step, so concurrent
-- appenders get consecutive seqs with no gap.
if redis.call('EXISTS', KEYS[1]) == 0 then
  -- A new incarnation: a fresh epoch, and seqs continue after any entries left behind.
  local top = redis.call('ZREVRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  local base = 0
  if #top > 0 then
    base = tonumber(top[2])
  end
  local t = redis.call('TIME')
  redis.call('HSET', KEYS[1], 'seq', base, 'epoch', t[1] .. '.' .. t[2])
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('ZADD', KEYS[2], seq, seq .. ':' .. ARGV[1])
local size = redis.call('ZCARD', KEYS[2])
local keep = tonumber(ARGV[2])
if size > keep then
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, size - keep - 1)
end
if ARGV[3] == '' then
  redis.call('PERSIST', KEYS[2])
else
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
return seq
