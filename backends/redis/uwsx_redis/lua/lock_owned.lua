-- Lease renew / release: act only when the live lease belongs to the owner.
-- KEYS[1] lease. ARGV[1] owner, ARGV[2] 'renew' or 'release', ARGV[3] ttl ms (renew).
-- Returns 1 when applied, else 0.
local v = redis.call('GET', KEYS[1])
if not v then
  return 0
end
local colon = string.find(v, ':', 1, true)
if not colon or string.sub(v, colon + 1) ~= ARGV[1] then
  return 0
end
if ARGV[2] == 'renew' then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
else
  redis.call('DEL', KEYS[1])
end
return 1
