-- commit_turn: fenced append of both messages, metadata, turn record, lease release.
-- KEYS: meta, msgs, turns, lease
-- ARGV: turn_id, fence, user_json, assistant_json, metadata_json, record_json, now, ttl_ms,
--       channel, 1 and the agent state that replaces the session's (0 alone: kept), then
--       commands to run once committed (a single server: their keys need not be KEYS), each
--       as its argument count and its arguments; a negative count runs it only if the
--       command before it replied 0
-- Returns 1, or 0 (nothing written, no command run) when the session is gone or the lease
-- is not held by (fence, turn_id).
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
local i = 11
if ARGV[10] == '1' then
  redis.call('HSET', meta, 'state', ARGV[11])
  i = 12
end
redis.call('DEL', lease)
redis.call('PEXPIRE', meta, ttl_ms)
redis.call('PEXPIRE', msgs, ttl_ms)
redis.call('PEXPIRE', turns, ttl_ms)
redis.call('SPUBLISH', ARGV[9], '1')
local last
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  if n > 0 or last == 0 then
    last = redis.call(unpack(ARGV, i + 1, i + math.abs(n)))
  end
  i = i + math.abs(n) + 1
end
return 1
