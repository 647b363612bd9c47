-- Stream bounds. KEYS[1] counter hash, KEYS[2] stream. Returns {counter, epoch, oldest id}.
local c = redis.call('HMGET', KEYS[1], 'seq', 'epoch')
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
local oldest = false
if #first > 0 then
  oldest = first[1][1]
end
return {c[1] or '0', c[2] or '', oldest}
