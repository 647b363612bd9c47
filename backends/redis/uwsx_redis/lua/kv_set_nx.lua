-- set_if_absent. KEYS[1] key. ARGV[1] value, ARGV[2] ttl ms or ''.
-- Returns {1} when stored, else {0, current value} (WRONGTYPE for a non-string key).
uwsx_purge_dead_map(KEYS[1], uwsx_now())
local ok
if ARGV[2] == '' then
  ok = redis.call('SET', KEYS[1], ARGV[1], 'NX')
else
  ok = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
end
if ok then
  return {1}
end
return {0, redis.call('GET', KEYS[1])}
