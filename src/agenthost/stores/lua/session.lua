-- session: create, delete, read a page of messages, or read a turn — each atomically.
-- KEYS: meta, msgs, turns, lease
-- ARGV[1] = op
--   'create', metadata_json, now, ttl_ms        -> 1 created | 0 exists
--   'delete', channel                           -> 1 deleted | 0 unknown
--   'page', limit, before (-1 = newest)         -> false (no session) | {messages...}
--   'turn', turn_id                             -> false | {record, lease-or-false}
--   'lease'                                     -> false | "fence:turn_id" (a live lease)
local meta, msgs, turns, lease = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local op = ARGV[1]
if op == 'create' then
  if redis.call('EXISTS', meta) == 1 then
    return 0
  end
  redis.call('DEL', msgs, turns, lease)
  redis.call('HSET', meta, 'created_at', ARGV[3], 'updated_at', ARGV[3],
             'count', 0, 'fence', 0, 'metadata', ARGV[2])
  redis.call('PEXPIRE', meta, tonumber(ARGV[4]))
  return 1
elseif op == 'delete' then
  local existed = redis.call('DEL', meta)
  redis.call('DEL', msgs, turns, lease)
  if existed == 1 then
    redis.call('SPUBLISH', ARGV[2], '1')
  end
  return existed
elseif op == 'page' then
  if redis.call('EXISTS', meta) == 0 then
    return false
  end
  local limit, before = tonumber(ARGV[2]), tonumber(ARGV[3])
  local len = redis.call('LLEN', msgs)
  local stop = len
  if before >= 0 and before < len then
    stop = before
  end
  if stop <= 0 or limit <= 0 then
    return {}
  end
  local start = stop - limit
  if start < 0 then
    start = 0
  end
  return redis.call('LRANGE', msgs, start, stop - 1)
elseif op == 'turn' then
  if redis.call('EXISTS', meta) == 0 then
    return false
  end
  local record = redis.call('HGET', turns, ARGV[2])
  if not record then
    return false
  end
  return {record, redis.call('GET', lease)}
elseif op == 'lease' then
  if redis.call('EXISTS', meta) == 0 then
    return false
  end
  return redis.call('GET', lease)
end
return redis.error_reply('unknown op ' .. tostring(op))
