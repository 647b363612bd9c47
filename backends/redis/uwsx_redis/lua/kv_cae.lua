-- compare_and_expire. KEYS[1] key. ARGV[1] expected, ARGV[2] ttl ms.
-- Returns 1 when the TTL was reset, else 0.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
