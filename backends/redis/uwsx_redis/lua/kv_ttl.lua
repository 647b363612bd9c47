-- ttl (any kind). KEYS[1] key. Returns PTTL: -2 absent, -1 no expiry, else ms left.
uwsx_purge_dead_map(KEYS[1], uwsx_now())
return redis.call('PTTL', KEYS[1])
