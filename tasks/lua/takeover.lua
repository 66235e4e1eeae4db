-- Take over a lease whose holder is known dead (a process of this host that is gone):
-- compare-and-set on the dead holder's token, with a new fence, as acquire.lua grants.
-- KEYS[1] lease key, KEYS[2] fence key, KEYS[3] holder hash
-- ARGV[1] the dead holder's token, ARGV[2] new token, ARGV[3] ttl ms, ARGV[4] holder id,
-- ARGV[5] host, ARGV[6] pid, ARGV[7] ref, ARGV[8] fence key ttl ms, ARGV[9] start time,
-- ARGV[10] node
-- Returns {1, fence, now_ms} when taken over, {0} when the lease holds another token
-- (or none: then acquire.lua takes it).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return {0}
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
local fence = math.max(now_us, last + 1)
redis.call('SET', KEYS[2], string.format('%.0f', fence), 'PX', ARGV[8])
local now = math.floor(now_us / 1000)
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], 'id', ARGV[4], 'host', ARGV[5], 'pid', ARGV[6], 'ref', ARGV[7],
  'acquired_at', now, 'heartbeat_at', now, 'fence', string.format('%.0f', fence),
  'started', ARGV[9], 'node', ARGV[10], 'token', ARGV[2])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
return {1, fence, now}
