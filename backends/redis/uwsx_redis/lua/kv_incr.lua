-- incr with TTL. KEYS[1] key. ARGV[1] amount, ARGV[2] ttl ms. Returns the new value.
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return v
