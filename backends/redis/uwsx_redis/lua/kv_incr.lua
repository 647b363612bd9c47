-- incr with TTL. KEYS[1] key. ARGV[1] amount, ARGV[2] ttl ms. Returns the new value as text:
-- INCRBY's integer reply becomes a Lua double inside a script, exact only up to 2^53.
redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return redis.call('GET', KEYS[1])
