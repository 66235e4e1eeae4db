-- Compare-and-delete: give a lease up only if the token is still ours, and take the
-- write off the status board.
-- KEYS[1] lease, KEYS[2] holder hash, KEYS[3] status hash, KEYS[4] active index zset
-- ARGV[1] token, ARGV[2] index member, ARGV[3] '0' when no heartbeat ever tried to
-- publish the status (a write done within a heartbeat: there is no entry to remove)
-- Returns 1 when released, 0 when the lease was no longer ours (nothing is touched).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if ARGV[3] == '0' then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 1
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[2])
return 1
