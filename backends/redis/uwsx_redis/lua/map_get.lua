-- map_get. KEYS[1] map. ARGV[1] field. Returns the live value or nil (an expired field is
-- deleted on the way).
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then
  return false
end
local d, v = uwsx_split(raw)
if d and d <= uwsx_now() then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return false
end
return v
