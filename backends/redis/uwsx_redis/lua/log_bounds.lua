-- SortedLog bounds. KEYS[1] counter hash, KEYS[2] entries. Returns {counter, epoch, oldest}
-- read together (counter 0 and epoch '' for a log never appended to; oldest nil if empty).
local c = redis.call('HMGET', KEYS[1], 'seq', 'epoch')
local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local first = false
if #oldest > 0 then
  first = oldest[2]
end
return {c[1] or '0', c[2] or '', first}
