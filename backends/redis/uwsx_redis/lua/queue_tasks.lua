-- The fenced task state machine of one queue space (same slot as its jobs, see queue_jobs).
-- KEYS[1] the space's task sequence counter (routes the call). ARGV[1] operation,
-- ARGV[2] key base, ARGV[3] task id (where one is needed).
--   base .. 't:' .. id  task hash {n name, i input, k?, r?, s status, res?, e?, a attempts,
--                       x fence expiry (wall s), c created (s), u updated (s), f fence,
--                       d fence deadline ms}
--   base .. 'tall'      every task (sorted set, score = insertion serial)
--   base .. 'tpend'     pending tasks (score = insertion serial)
--   base .. 'trun'      running tasks (score = fence deadline ms)
--   base .. 'tdone'     committed/failed tasks (score = updated ms)
--   base .. 'tcount'    counts per status and per "<name>\0<status>"
local op, base, id = ARGV[1], ARGV[2], ARGV[3]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local wall = clock[1] .. '.' .. string.format('%06d', tonumber(clock[2]))
local all, pend, run, done = base .. 'tall', base .. 'tpend', base .. 'trun', base .. 'tdone'
local counts = base .. 'tcount'

local function row(task) return base .. 't:' .. task end
local function secs(ms) return string.format('%.3f', ms / 1000) end

local function count(name, status, by)
  redis.call('HINCRBY', counts, status, by)
  redis.call('HINCRBY', counts, name .. '\0' .. status, by)
end

local function move(task, name, from, to)
  count(name, from, -1)
  count(name, to, 1)
  redis.call('HSET', row(task), 's', to)
end

-- {status, fence, deadline ms, name} of a task, or nil
local function state(task)
  local v = redis.call('HMGET', row(task), 's', 'f', 'd', 'n')
  if not v[1] then
    return nil
  end
  return v[1], v[2], tonumber(v[3]), v[4]
end

local function record(task)
  local v = redis.call('HMGET', row(task), 'n', 'i', 'k', 'r', 's', 'res', 'e', 'a', 'x', 'c', 'u')
  if not v[1] then
    return false
  end
  return {task, v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11]}
end

-- Move the given task ids to running with fresh fences ARGV[first..]; returns the claims.
local function claim(ids, ttl, first)
  local out = {}
  for i, task in ipairs(ids) do
    local status, _, _, name = state(task)
    local fence = ARGV[first + i - 1]
    local attempts = redis.call('HINCRBY', row(task), 'a', 1)
    redis.call('HSET', row(task), 'f', fence, 'd', now + ttl, 'x', secs(now + ttl), 'u', wall)
    if status ~= 'running' then
      redis.call('ZREM', pend, task)
      move(task, name, status, 'running')
    end
    redis.call('ZADD', run, now + ttl, task)
    local v = redis.call('HMGET', row(task), 'i', 'k', 'r')
    out[#out + 1] = {task, name, v[1], v[2], v[3], fence, attempts}
  end
  return out
end

if op == 'insert' then
  -- ARGV[4] name, [5] input, [6] status, [7] fence, [8] fence ttl ms, [9] idempotency key
  -- ('' none), [10] request id ('' none). Returns 0 if the id exists, else 1.
  if redis.call('EXISTS', row(id)) == 1 then
    return 0
  end
  local name, status, ttl = ARGV[4], ARGV[6], tonumber(ARGV[8])
  local running = status == 'running'
  local deadline = now
  if running then
    deadline = now + ttl
  end
  redis.call('HSET', row(id), 'n', name, 'i', ARGV[5], 's', status, 'a', running and 1 or 0,
    'x', secs(deadline), 'c', wall, 'u', wall, 'f', ARGV[7], 'd', deadline)
  if ARGV[9] ~= '' then redis.call('HSET', row(id), 'k', ARGV[9]) end
  if ARGV[10] ~= '' then redis.call('HSET', row(id), 'r', ARGV[10]) end
  local serial = redis.call('INCR', KEYS[1])
  redis.call('ZADD', all, serial, id)
  if running then
    redis.call('ZADD', run, deadline, id)
  else
    redis.call('ZADD', pend, serial, id)
  end
  count(name, status, 1)
  return 1
end

if op == 'rearm' or op == 'heartbeat' then
  -- rearm: ARGV[4] new fence, [5] attempt, [6] ttl ms (any fence).
  -- heartbeat: ARGV[4] fence, [6] ttl ms (the fence must match and must not have lapsed).
  local status, fence, deadline = state(id)
  if status ~= 'running' then
    return 0
  end
  local ttl = tonumber(ARGV[6])
  if op == 'heartbeat' then
    if fence ~= ARGV[4] or deadline < now then
      return 0
    end
  else
    redis.call('HSET', row(id), 'f', ARGV[4], 'a', ARGV[5])
  end
  redis.call('HSET', row(id), 'd', now + ttl, 'x', secs(now + ttl), 'u', wall)
  redis.call('ZADD', run, now + ttl, id)
  return 1
end

if op == 'commit' or op == 'fail' then
  -- ARGV[4] fence, [5] result / error. Applies only to a running row holding that fence.
  local status, fence, _, name = state(id)
  if status ~= 'running' or fence ~= ARGV[4] then
    return 0
  end
  local final = op == 'commit' and 'committed' or 'failed'
  redis.call('HSET', row(id), op == 'commit' and 'res' or 'e', ARGV[5], 'u', wall)
  move(id, name, 'running', final)
  redis.call('ZREM', run, id)
  redis.call('ZADD', done, now, id)
  return 1
end

if op == 'read' then
  return record(id)
end

if op == 'expire' then
  -- Expire a running row's fence now; returns the fence, or nil if not running.
  local status, fence = state(id)
  if status ~= 'running' then
    return false
  end
  redis.call('HSET', row(id), 'd', now - 1000, 'x', secs(now - 1000), 'u', wall)
  redis.call('ZADD', run, now - 1000, id)
  return fence
end

if op == 'claim_pending' then
  -- ARGV[4] limit, [5] ttl ms, [6..] fresh fences. Oldest pending rows first.
  local limit = tonumber(ARGV[4])
  return claim(redis.call('ZRANGE', pend, 0, limit - 1), tonumber(ARGV[5]), 6)
end

if op == 'reclaim' then
  -- ARGV[4] limit, [5] ttl ms, [6..] fresh fences. Running rows whose fence lapsed, the
  -- longest lapsed first.
  local limit = tonumber(ARGV[4])
  local ids = redis.call('ZRANGEBYSCORE', run, '-inf', '(' .. now, 'LIMIT', 0, limit)
  return claim(ids, tonumber(ARGV[5]), 6)
end

if op == 'list' then
  -- ARGV[4] name or '', [5] status or '', [6] limit, [7] offset. Newest first.
  local name, status = ARGV[4], ARGV[5]
  local limit, skip = tonumber(ARGV[6]), tonumber(ARGV[7])
  local out, pos = {}, 0
  while #out < limit do
    local page = redis.call('ZREVRANGE', all, pos, pos + 199)
    if #page == 0 then
      break
    end
    pos = pos + #page
    for _, task in ipairs(page) do
      local v = redis.call('HMGET', row(task), 'n', 's')
      if (name == '' or v[1] == name) and (status == '' or v[2] == status) then
        if skip > 0 then
          skip = skip - 1
        elseif #out < limit then
          out[#out + 1] = record(task)
        end
      end
    end
  end
  return out
end

if op == 'counts' then
  -- ARGV[4] name or ''. Returns {pending, running, committed, failed}.
  local prefix = ''
  if ARGV[4] ~= '' then
    prefix = ARGV[4] .. '\0'
  end
  local v = redis.call('HMGET', counts, prefix .. 'pending', prefix .. 'running',
    prefix .. 'committed', prefix .. 'failed')
  return {tonumber(v[1] or 0), tonumber(v[2] or 0), tonumber(v[3] or 0), tonumber(v[4] or 0)}
end

if op == 'cleanup' then
  -- ARGV[4] age ms. Deletes committed/failed rows not updated for that long.
  local old = redis.call('ZRANGEBYSCORE', done, '-inf', '(' .. (now - tonumber(ARGV[4])))
  for _, task in ipairs(old) do
    local status, _, _, name = state(task)
    if status then
      count(name, status, -1)
    end
    redis.call('DEL', row(task))
    redis.call('ZREM', done, task)
    redis.call('ZREM', all, task)
  end
  return #old
end

return redis.error_reply('queue_tasks: unknown operation ' .. tostring(op))
