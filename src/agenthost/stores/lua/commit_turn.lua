-- commit_turn: fenced append of both messages, metadata, turn record, lease release.
-- KEYS: meta, msgs, turns, lease
-- ARGV: turn_id, fence, user_json, assistant_json, metadata_json, record_json, now, ttl_ms,
--       channel[, state]: the agent state that replaces the session's (absent: kept)
-- Returns 1, or 0 (nothing written) when the session is gone or the lease is not held by
-- (fence, turn_id).
local meta, msgs, turns, lease = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
-- The meta fence catches a session that expired (or was deleted) under a live lease.
if redis.call('GET', lease) ~= (ARGV[2] .. ':' .. ARGV[1])
    or redis.call('HGET', meta, 'fence') ~= ARGV[2] then
  return 0
end
local ttl_ms = tonumber(ARGV[8])
-- The list length after the push is the count: turns = count / 2, since every committed
-- turn adds exactly two messages.
local count = redis.call('RPUSH', msgs, ARGV[3], ARGV[4])
redis.call('HSET', meta, 'metadata', ARGV[5], 'updated_at', ARGV[7], 'count', count)
redis.call('HSET', turns, ARGV[1], ARGV[6])
if ARGV[10] then
  redis.call('HSET', meta, 'state', ARGV[10])
end
redis.call('DEL', lease)
redis.call('PEXPIRE', meta, ttl_ms)
redis.call('PEXPIRE', msgs, ttl_ms)
redis.call('PEXPIRE', turns, ttl_ms)
redis.call('SPUBLISH', ARGV[9], '1')
return 1
