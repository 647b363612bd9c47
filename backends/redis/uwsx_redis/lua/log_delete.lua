-- Delete a log or stream with its counter. KEYS[1] counter, KEYS[2] entries/stream, and for
-- a stream KEYS[3] the producer index. ARGV[1] (stream only) the dedup key prefix: each
-- producer's dedup hash is ARGV[1] .. producer, in the same hash slot as the other keys.
-- Returns 1 if the log existed, else 0.
local existed = redis.call('EXISTS', KEYS[1], KEYS[2])
if #KEYS > 2 then
  local producers = redis.call('ZRANGE', KEYS[3], 0, -1)
  for i = 1, #producers do
    redis.call('UNLINK', ARGV[1] .. producers[i])
  end
  redis.call('UNLINK', KEYS[3])
end
redis.call('UNLINK', KEYS[1], KEYS[2])
if existed > 0 then
  return 1
end
return 0
