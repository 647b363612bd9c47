-- map_remove. KEYS[1] map. ARGV[1] field, ARGV[2] '1' to count only names starting with
-- ARGV[3]. Returns {removed 0/1, live matching fields remaining}. Concurrent removals of the
-- last two holders therefore see remaining 1 and 0, in some order: "gone" is seen once.
local names = uwsx_live(KEYS[1], uwsx_now())
local field, prefixed, prefix = ARGV[1], ARGV[2] == '1', ARGV[3]
local removed, remaining = 0, 0
for i = 1, #names do
  if names[i] == field then
    removed = 1
  elseif uwsx_matches(names[i], prefixed, prefix) then
    remaining = remaining + 1
  end
end
if removed == 1 then
  redis.call('HDEL', KEYS[1], field)
end
return {removed, remaining}
