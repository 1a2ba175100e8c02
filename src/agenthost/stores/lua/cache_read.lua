-- The session cache's read (stores/cached.py): one round trip at the start of a turn.
-- KEYS: state hash, window list. ARGV: turn id, window size.
-- Returns {version or false, the turn's cached answer or false, the newest `window`
-- messages}.
local got = redis.call('HMGET', KEYS[1], 'version', 'a:' .. ARGV[1])
local n = tonumber(ARGV[2])
local window = {}
if got[1] and n > 0 then
    window = redis.call('LRANGE', KEYS[2], -n, -1)
end
return {got[1] or false, got[2] or false, window}
