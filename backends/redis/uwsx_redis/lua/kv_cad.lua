-- compare_and_delete. KEYS[1] key. ARGV[1] expected. Returns 1 when deleted, else 0.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
return 1
