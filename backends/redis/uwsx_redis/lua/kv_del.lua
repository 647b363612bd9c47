-- delete one key of any kind. KEYS[1] key. Returns 1 when a live key was deleted, else 0.
uwsx_purge_dead_map(KEYS[1], uwsx_now())
return redis.call('UNLINK', KEYS[1])
