-- Renew a held lease and (optionally) publish the write's status, only if the caller
-- still holds the lease token: a paused, stale holder can neither extend the lease nor
-- overwrite the new owner's status.
-- KEYS[1] lease, KEYS[2] holder hash, KEYS[3] status hash, KEYS[4] active index zset
-- ARGV[1] token, ARGV[2] lease ttl ms, ARGV[3] status ttl ms, ARGV[4] '1' to publish,
-- ARGV[5] index member, ARGV[6..] status field/value pairs
-- Returns the server time in ms, or 0 when the lease is no longer ours.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[2], 'heartbeat_at', now)
redis.call('PEXPIRE', KEYS[2], ARGV[2])
if ARGV[4] == '1' then
  if #ARGV >= 6 then
    redis.call('HSET', KEYS[3], unpack(ARGV, 6))
  end
  redis.call('HSET', KEYS[3], 'updated_at', now)
  redis.call('HSETNX', KEYS[3], 'started_at', now)
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
  redis.call('ZADD', KEYS[4], now, ARGV[5])
  -- The index lives as long as some write still beats: members older than a status
  -- hash's ttl are dropped, and the key expires with the last write's entry.
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. (now - tonumber(ARGV[3])))
  if redis.call('PTTL', KEYS[4]) < tonumber(ARGV[3]) then
    redis.call('PEXPIRE', KEYS[4], ARGV[3])
  end
end
return now
