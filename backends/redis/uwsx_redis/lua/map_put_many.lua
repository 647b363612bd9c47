-- map_put_many. KEYS[1] map. ARGV[1] mode, ARGV[2] ttl ms or '', then field, value pairs.
-- Returns the number of fields written.
local now = uwsx_now()
local ttl = ARGV[2]
local deadline = ''
if ttl ~= '' then
  deadline = uwsx_int(now + tonumber(ttl))
end
local flat, names = {}, {}
for i = 3, #ARGV, 2 do
  flat[#flat + 1] = ARGV[i]
  flat[#flat + 1] = deadline .. '|' .. ARGV[i + 1]
  names[#names + 1] = ARGV[i]
end
for i = 1, #flat, 500 do
  redis.call('HSET', KEYS[1], unpack(flat, i, math.min(i + 499, #flat)))
end
if ttl ~= '' and ARGV[1] == 'n' then
  for i = 1, #names, 500 do
    local last = math.min(i + 499, #names)
    redis.call('HPEXPIREAT', KEYS[1], deadline, 'FIELDS', last - i + 1, unpack(names, i, last))
  end
end
return #names
