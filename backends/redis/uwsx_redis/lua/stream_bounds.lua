-- Stream bounds. KEYS[1] counter hash, KEYS[2] stream. Returns {counter, epoch, oldest id};
-- the epoch as in log_bounds.lua (counter creation time and the server's run_id).
local c = redis.call('HMGET', KEYS[1], 'seq', 'epoch')
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
local oldest = false
if #first > 0 then
  oldest = first[1][1]
end
local epoch = ''
if c[2] then
  epoch = c[2] .. '@' .. string.sub(string.match(redis.call('INFO', 'server'), 'run_id:(%x+)'), 1, 16)
end
return {c[1] or '0', epoch, oldest}
