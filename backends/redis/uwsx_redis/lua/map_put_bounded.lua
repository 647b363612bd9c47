-- map_put_bounded. KEYS[1] map, KEYS[2] (optional) the key whose existence closes the map.
-- ARGV[1] mode, ARGV[2] field, ARGV[3] value, ARGV[4] ttl ms or '', ARGV[5] max live fields
-- or '' for no bound. Expired fields are swept first.
-- Returns {'closed'}, {'full'} or {'stored', name, value, ...} (live fields after the write).
local now = uwsx_now()
if #KEYS > 1 then
  uwsx_purge_dead_map(KEYS[2], now)
  if redis.call('EXISTS', KEYS[2]) == 1 then
    return {'closed'}
  end
end
local names, values = uwsx_live(KEYS[1], now)
local field, value = ARGV[2], ARGV[3]
local present = false
for i = 1, #names do
  if names[i] == field then
    present = true
    break
  end
end
if ARGV[5] ~= '' and not present and #names >= tonumber(ARGV[5]) then
  return {'full'}
end
uwsx_store(KEYS[1], ARGV[1], field, value, ARGV[4], now)
local out = {'stored'}
for i = 1, #names do
  out[#out + 1] = names[i]
  if names[i] == field then
    out[#out + 1] = value
  else
    out[#out + 1] = values[i]
  end
end
if not present then
  out[#out + 1] = field
  out[#out + 1] = value
end
return out
