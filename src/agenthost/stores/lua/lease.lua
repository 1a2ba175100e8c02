-- lease: compare-and-renew or compare-and-release of a session lease.
-- KEYS: lease
-- ARGV: expected "fence:turn_id", op ('renew' | 'release'), lease_ms, channel
-- Returns 1 if the lease was ours, else 0.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if ARGV[2] == 'renew' then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
else
  redis.call('DEL', KEYS[1])
  redis.call('SPUBLISH', ARGV[4], '1')
end
return 1
