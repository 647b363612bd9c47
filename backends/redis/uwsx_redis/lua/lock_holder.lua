-- Lease holder. KEYS[1] lease. Returns {"<fence>:<owner>", pttl ms} or nil.
local v = redis.call('GET', KEYS[1])
if not v then
  return false
end
return {v, redis.call('PTTL', KEYS[1])}
