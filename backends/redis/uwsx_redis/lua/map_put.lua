-- map_put. KEYS[1] map. ARGV[1] mode ('n' native field TTL, 'l' lazy), ARGV[2] field,
-- ARGV[3] value, ARGV[4] ttl ms or '', ARGV[5] '1' to count only names starting with ARGV[6].
-- Returns how many other live fields (matching the prefix) the map held, counted atomically
-- with the write.
local now = uwsx_now()
local names = uwsx_live(KEYS[1], now)
local field, prefixed, prefix = ARGV[2], ARGV[5] == '1', ARGV[6]
local others = 0
for i = 1, #names do
  if names[i] ~= field and uwsx_matches(names[i], prefixed, prefix) then
    others = others + 1
  end
end
uwsx_store(KEYS[1], ARGV[1], field, ARGV[3], ARGV[4], now)
return others
