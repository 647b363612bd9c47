-- map_items / map_count. KEYS[1] map. ARGV[1] 'count' for the live count, else 'items'.
-- Returns the count, or a flat array name, value, name, value... of live fields.
local names, values = uwsx_live(KEYS[1], uwsx_now())
if ARGV[1] == 'count' then
  return #names
end
local out = {}
for i = 1, #names do
  out[#out + 1] = names[i]
  out[#out + 1] = values[i]
end
return out
