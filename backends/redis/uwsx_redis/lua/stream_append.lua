-- Stream append, plain or idempotent. KEYS[1] counter hash {seq, epoch}, KEYS[2] stream
-- (ids <seq>-0), and for an idempotent append KEYS[3] the producer's dedup hash
-- (request id -> seq) and KEYS[4] the producer index (sorted set, producer -> dedup deadline).
-- ARGV[1] event, ARGV[2] data, ARGV[3] max entries (approximate trim), ARGV[4] stream TTL ms
-- or '', and when idempotent ARGV[5] request id, ARGV[6] producer id, ARGV[7] dedup TTL ms
-- or ''.
-- Returns {duplicate 0/1, seq}. A duplicate changes nothing, so a retry can neither repeat a
-- message nor advance the counter.
local idem = #KEYS == 4
if idem then
  local seen = redis.call('HGET', KEYS[3], ARGV[5])
  if seen then
    return {1, tonumber(seen)}
  end
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  local top = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
  local base = 0
  if #top > 0 then
    base = tonumber(string.match(top[1][1], '^(%d+)'))
  end
  local t = redis.call('TIME')
  redis.call('HSET', KEYS[1], 'seq', base, 'epoch', t[1] .. '.' .. t[2])
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], seq .. '-0', 'e', ARGV[1], 'd', ARGV[2])
if ARGV[4] == '' then
  redis.call('PERSIST', KEYS[2])
else
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
if idem then
  redis.call('HSET', KEYS[3], ARGV[5], seq)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if ARGV[7] == '' then
    redis.call('PERSIST', KEYS[3])
    redis.call('ZADD', KEYS[4], 'inf', ARGV[6])
  else
    redis.call('PEXPIRE', KEYS[3], ARGV[7])
    redis.call('ZADD', KEYS[4], string.format('%d', now + tonumber(ARGV[7])), ARGV[6])
  end
  -- forget producers whose dedup hash has expired
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. string.format('%d', now))
end
return {0, seq}
