-- fail_turn: fenced; mark the turn failed (its user message stays in the record), release.
-- KEYS: meta, turns, lease
-- ARGV: turn_id, fence, tail_json, ttl_ms, channel
--   tail_json = ',"updated_at":...,"response":null,"error":{...},"fingerprint":"..."}',
--   encoded by Python
-- Returns the updated record JSON, or false when the session or the lease is not ours.
local meta, turns, lease = KEYS[1], KEYS[2], KEYS[3]
if redis.call('GET', lease) ~= (ARGV[2] .. ':' .. ARGV[1])
    or redis.call('HGET', meta, 'fence') ~= ARGV[2] then
  return false
end
local raw = redis.call('HGET', turns, ARGV[1])
if not raw then
  return false
end
-- Records are msgspec JSON in field order (..., updated_at, response, error, fingerprint), and a quote
-- inside a string value is escaped, so these literals only match the fields themselves.
-- Splicing keeps every other byte as stored (cjson would round the floats to 14 digits).
local cut = string.find(raw, ',"updated_at":', 1, true)
if not cut then
  return false
end
local encoded = string.gsub(string.sub(raw, 1, cut - 1), '"status":"%a+"',
                            '"status":"failed"', 1) .. ARGV[3]
local ttl_ms = tonumber(ARGV[4])
redis.call('HSET', turns, ARGV[1], encoded)
redis.call('DEL', lease)
redis.call('PEXPIRE', meta, ttl_ms)
redis.call('PEXPIRE', turns, ttl_ms)
redis.call('SPUBLISH', ARGV[5], '1')
return encoded
