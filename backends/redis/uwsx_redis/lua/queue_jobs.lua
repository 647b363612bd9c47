-- Jobs of one queue space. Every key of a space shares the space's hash tag (one slot), so
-- each operation is one script; keys are derived here from the space's key base.
-- KEYS[1] the space's job id counter (routes the call). ARGV[1] operation, ARGV[2] key base.
--   base .. 'j:' .. id   job hash {q, p, r?, c created (s), a attempts, t token, u deadline ms}
--   base .. 'r:' .. q    unclaimed jobs (sorted set, score = id)
--   base .. 'c:' .. q    claimed jobs (sorted set, score = claim deadline ms)
--   base .. 'queues'     names of queues with jobs
-- Deadlines are on the server clock.
local op, base = ARGV[1], ARGV[2]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local queues = base .. 'queues'

local function job(id) return base .. 'j:' .. id end
local function ready(q) return base .. 'r:' .. q end
local function claimed(q) return base .. 'c:' .. q end

if op == 'enqueue' then
  -- ARGV[3] queue, ARGV[4] payload, ARGV[5] request id ('' = none). Returns the id.
  local q = ARGV[3]
  local id = redis.call('INCR', KEYS[1])
  local created = clock[1] .. '.' .. string.format('%06d', tonumber(clock[2]))
  redis.call('HSET', job(id), 'q', q, 'p', ARGV[4], 'c', created, 'a', 0, 't', '', 'u', '')
  if ARGV[5] ~= '' then
    redis.call('HSET', job(id), 'r', ARGV[5])
  end
  redis.call('ZADD', ready(q), id, id)
  redis.call('SADD', queues, q)
  return id
end

if op == 'claim' then
  -- ARGV[3] queue, ARGV[4] limit, ARGV[5] visibility ms, ARGV[6..] one fresh token per slot.
  -- Takes unclaimed jobs and jobs whose claim lapsed, oldest id first.
  -- Returns {{id, payload, request id or nil, attempts, created, token}, ...}.
  local q, limit, vis = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
  local ids = {}
  for _, id in ipairs(redis.call('ZRANGE', ready(q), 0, limit - 1)) do
    ids[#ids + 1] = tonumber(id)
  end
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', claimed(q), '-inf', '(' .. now)) do
    ids[#ids + 1] = tonumber(id)
  end
  table.sort(ids)
  local out = {}
  for i = 1, math.min(limit, #ids) do
    local id = ids[i]
    local deadline = now + vis
    local token = ARGV[5 + i]
    redis.call('ZREM', ready(q), id)
    redis.call('ZADD', claimed(q), deadline, id)
    local attempts = redis.call('HINCRBY', job(id), 'a', 1)
    redis.call('HSET', job(id), 't', token, 'u', deadline)
    local row = redis.call('HMGET', job(id), 'p', 'r', 'c')
    out[#out + 1] = {id, row[1], row[2], attempts, row[3], token}
  end
  return out
end

if op == 'complete' or op == 'fail' or op == 'extend' then
  -- ARGV[3] extension ms (extend), then id, token pairs. Acts only on jobs still held by
  -- that token (a re-claim rotated it otherwise). Returns the ids acted on.
  local done = {}
  for i = 4, #ARGV, 2 do
    local id, token = ARGV[i], ARGV[i + 1]
    local row = redis.call('HMGET', job(id), 'q', 't', 'u')
    if row[1] and row[2] == token and row[3] ~= '' then
      local q = row[1]
      if op == 'complete' then
        redis.call('DEL', job(id))
        redis.call('ZREM', claimed(q), id)
        redis.call('ZREM', ready(q), id)
      elseif op == 'fail' then
        redis.call('HSET', job(id), 't', '', 'u', '')
        redis.call('ZREM', claimed(q), id)
        redis.call('ZADD', ready(q), id, id)
      else
        local deadline = tonumber(row[3]) + tonumber(ARGV[3])
        redis.call('HSET', job(id), 'u', deadline)
        redis.call('ZADD', claimed(q), deadline, id)
      end
      done[#done + 1] = id
    end
  end
  return done
end

local function names(q)
  if q ~= '' then
    return {q}
  end
  return redis.call('SMEMBERS', queues)
end

if op == 'pending' then
  -- ARGV[3] queue or '' for all. Returns the number of unclaimed jobs.
  local n = 0
  for _, q in ipairs(names(ARGV[3])) do
    n = n + redis.call('ZCARD', ready(q))
  end
  return n
end

if op == 'clear' then
  -- ARGV[3] queue or '' for all. Deletes jobs, claimed or not; returns how many.
  local n = 0
  for _, q in ipairs(names(ARGV[3])) do
    for _, set in ipairs({ready(q), claimed(q)}) do
      for _, id in ipairs(redis.call('ZRANGE', set, 0, -1)) do
        n = n + redis.call('DEL', job(id))
      end
      redis.call('DEL', set)
    end
    redis.call('SREM', queues, q)
  end
  return n
end

return redis.error_reply('queue_jobs: unknown operation ' .. tostring(op))
