-- expire (any kind). KEYS[1] key. ARGV[1] ttl ms. Returns 1 when the key exists, else 0.
uwsx_purge_dead_map(KEYS[1], uwsx_now())
return redis.call('PEXPIRE', KEYS[1], ARGV[1])
