-- Shared helpers prepended to every uwsx script that touches maps or needs the server clock.
--
-- Map fields are stored as "<deadline ms>|<value>" (an empty deadline means none). The
-- deadline is on the server clock (TIME), so every client agrees on when a field dies. On
-- servers with per-field TTL (Valkey 9, Redis 7.4+) the field also gets HPEXPIREAT, which
-- removes it physically; the encoded deadline keeps reads exact on both kinds of server and
-- keeps the stored format identical across a server upgrade.

local function uwsx_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function uwsx_int(n)
  return string.format('%d', n)
end

-- Split a stored field value into (deadline or nil, value). A value written by someone else
-- (no separator) counts as a live value without deadline.
local function uwsx_split(raw)
  local bar = string.find(raw, '|', 1, true)
  if not bar then
    return nil, raw
  end
  local d = string.sub(raw, 1, bar - 1)
  if d == '' then
    return nil, string.sub(raw, bar + 1)
  end
  return tonumber(d), string.sub(raw, bar + 1)
end

local function uwsx_hdel(key, fields)
  -- unpack() has a stack limit, so delete in chunks
  for i = 1, #fields, 500 do
    redis.call('HDEL', key, unpack(fields, i, math.min(i + 499, #fields)))
  end
end

-- The live fields of a map as parallel arrays (names, values), plus how many expired fields
-- were deleted on the way. A map left without live fields is deleted.
local function uwsx_live(key, now)
  local flat = redis.call('HGETALL', key)
  local names, values, dead = {}, {}, {}
  for i = 1, #flat, 2 do
    local d, v = uwsx_split(flat[i + 1])
    if d and d <= now then
      dead[#dead + 1] = flat[i]
    else
      names[#names + 1] = flat[i]
      values[#values + 1] = v
    end
  end
  if #dead > 0 then
    uwsx_hdel(key, dead)
  end
  if #names == 0 and #flat == 0 then
    -- Native field expiry hides expired fields before the server reclaims them; a map with
    -- nothing live must not linger as an existing key.
    redis.call('DEL', key)
  end
  return names, values, #dead
end

-- A map whose fields all expired must behave as a missing key (EXISTS, TTL, DEL counts).
local function uwsx_purge_dead_map(key, now)
  if redis.call('TYPE', key)['ok'] == 'hash' then
    uwsx_live(key, now)
  end
end

-- Write one field with an optional TTL in ms ('' = none). mode 'n' also sets the native
-- per-field expiry; plain HSET already clears an older one.
local function uwsx_store(key, mode, field, value, ttl, now)
  if ttl == '' then
    redis.call('HSET', key, field, '|' .. value)
    return
  end
  local deadline = now + tonumber(ttl)
  redis.call('HSET', key, field, uwsx_int(deadline) .. '|' .. value)
  if mode == 'n' then
    redis.call('HPEXPIREAT', key, uwsx_int(deadline), 'FIELDS', 1, field)
  end
end

local function uwsx_matches(name, prefixed, prefix)
  return (not prefixed) or string.sub(name, 1, #prefix) == prefix
end
