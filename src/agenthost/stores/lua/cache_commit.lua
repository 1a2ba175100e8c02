-- The session cache's write after a commit PostgreSQL confirmed (stores/cached.py).
-- KEYS: state hash, window list, answered turn ids (a list, oldest first).
-- ARGV: mode ('append': the cache held version ARGV[2] when the turn began, so the two new
-- messages extend it; 'replace': the window is given whole), version before, version after,
-- turn id, answer, window cap, TTL in ms, answers kept, messages...
-- Everything written is labelled with the version it belongs to, and an append onto a
-- version other than the one it extends drops the entry instead: a later reader checks
-- the label against PostgreSQL, so whatever order writers race in, nothing stale is used.
local state, window, answered = KEYS[1], KEYS[2], KEYS[3]
if ARGV[1] == 'append' then
    if redis.call('HGET', state, 'version') ~= ARGV[2] then
        redis.call('DEL', state, window, answered)
        return 0
    end
else
    redis.call('DEL', window)
end
local cap = tonumber(ARGV[6])
for i = 9, #ARGV do
    redis.call('RPUSH', window, ARGV[i])
end
if cap > 0 then
    redis.call('LTRIM', window, -cap, -1)
else
    redis.call('DEL', window)
end
redis.call('HSET', state, 'version', ARGV[3], 'a:' .. ARGV[4], ARGV[5])
redis.call('RPUSH', answered, ARGV[4])
local keep = tonumber(ARGV[8])
while redis.call('LLEN', answered) > keep do
    redis.call('HDEL', state, 'a:' .. redis.call('LPOP', answered))
end
local ttl = tonumber(ARGV[7])
redis.call('PEXPIRE', state, ttl)
redis.call('PEXPIRE', window, ttl)
redis.call('PEXPIRE', answered, ttl)
return 1
