-- SortedLog bounds. KEYS[1] counter hash, KEYS[2] entries. Returns {counter, epoch, oldest}
-- read together (counter 0 and epoch '' for a log never appended to; oldest nil if empty).
-- The epoch is the counter's creation time and the serving process's run_id: a restart (even
-- one that kept the data) or a failover may have lost acknowledged appends, and it changes the
-- run_id, so consumers are told.
local c = redis.call('HMGET', KEYS[1], 'seq', 'epoch')
local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local first = false
if #oldest > 0 then
  first = oldest[2]
end
local epoch = ''
if c[2] then
  epoch = c[2] .. '@' .. string.sub(string.match(redis.call('INFO', 'server'), 'run_id:(%x+)'), 1, 16)
end
return {c[1] or '0', epoch, first}
