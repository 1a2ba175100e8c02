-- commit_turn: fenced append of both messages, metadata, turn record, lease release.
-- KEYS: meta, msgs, turns, lease
-- ARGV: turn_id, fence, user_json, assistant_json, metadata_json, record_json, now, ttl_ms,
--       channel, new_count
-- Returns 1, or 0 (nothing written) when the lease is not held by (fence, turn_id).
local meta, msgs, turns, lease = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
-- Deleting or expiring a session deletes its lease too, so the lease check covers both.
if redis.call('GET', lease) ~= (ARGV[2] .. ':' .. ARGV[1]) then
  return 0
end
local ttl_ms = tonumber(ARGV[8])
redis.call('RPUSH', msgs, ARGV[3], ARGV[4])
-- turns = count / 2: every committed turn adds exactly two messages.
redis.call('HSET', meta, 'metadata', ARGV[5], 'updated_at', ARGV[7], 'count', ARGV[10])
redis.call('HSET', turns, ARGV[1], ARGV[6])
redis.call('DEL', lease)
redis.call('PEXPIRE', meta, ttl_ms)
redis.call('PEXPIRE', msgs, ttl_ms)
redis.call('PEXPIRE', turns, ttl_ms)
redis.call('SPUBLISH', ARGV[9], '1')
return 1
