-- compare_and_set. KEYS[1] key. ARGV[1] expected, ARGV[2] new value, ARGV[3] ttl ms or ''.
-- Returns 1 when replaced, 0 when the stored value differs or is absent.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if ARGV[3] == '' then
  redis.call('SET', KEYS[1], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
