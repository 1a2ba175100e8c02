-- fail_turn: fenced; mark the turn failed (its user message stays in the record), release.
-- KEYS: meta, turns, lease
-- ARGV: turn_id, fence, error_code, error_message, now, ttl_ms, channel
-- Returns the updated record JSON, or false when the lease is not ours.
local meta, turns, lease = KEYS[1], KEYS[2], KEYS[3]
if redis.call('GET', lease) ~= (ARGV[2] .. ':' .. ARGV[1]) then
  return false
end
local raw = redis.call('HGET', turns, ARGV[1])
if not raw then
  return false
end
local record = cjson.decode(raw)
record['status'] = 'failed'
record['error'] = {code = ARGV[3], message = ARGV[4]}
record['updated_at'] = tonumber(ARGV[5])
local encoded = cjson.encode(record)
local ttl_ms = tonumber(ARGV[6])
redis.call('HSET', turns, ARGV[1], encoded)
redis.call('DEL', lease)
redis.call('PEXPIRE', meta, ttl_ms)
redis.call('PEXPIRE', turns, ttl_ms)
redis.call('SPUBLISH', ARGV[7], '1')
return encoded
