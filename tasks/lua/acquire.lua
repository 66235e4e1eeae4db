-- Take a ref lease: SET NX PX with a random token, then a fencing number.
-- KEYS[1] lease key, KEYS[2] fence key, KEYS[3] holder hash, KEYS[4] (optional) a guard
-- hash: when its field ARGV[11] exists nothing is taken and the reply is {2} (a job's
-- cancel flag, read in the same round trip as the grant)
-- ARGV[1] token, ARGV[2] ttl ms, ARGV[3] holder id, ARGV[4] host, ARGV[5] pid, ARGV[6] ref,
-- ARGV[7] fence key ttl ms, ARGV[8] the holder process's start time (or ''), ARGV[9] its
-- node (boot id and pid namespace: where that pid means that process), ARGV[10] the token
-- of a holder known dead ('' for none: a plain acquire)
-- Returns {1, fence, now_ms} when taken; when held, {0, pttl_ms, acquired_at_ms, host,
-- pid, start time, token, node} of the holder (false for what the holder hash lacks), so the
-- caller can tell a dead holder of its own host and call again with its token in ARGV[10]:
-- a compare-and-set on that token takes the lease over with a new fence.
--
-- The fence is max(server TIME in microseconds, last fence + 1): it only grows while the
-- fence key lives, and the key expires (ARGV[7], far longer than any lease) so that no
-- ref keeps a key forever. Once it has expired, the next fence comes from TIME again,
-- which is above every fence handed out before unless the server clock stepped back by
-- more than the time since that last grant (at least the fence key's ttl).
if KEYS[4] and redis.call('HEXISTS', KEYS[4], ARGV[11]) == 1 then
  return {2}
end
if ARGV[10] ~= '' and redis.call('GET', KEYS[1]) == ARGV[10] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
elseif not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local h = redis.call('HMGET', KEYS[3], 'acquired_at', 'host', 'pid', 'started', 'token',
    'node')
  return {0, redis.call('PTTL', KEYS[1]), h[1], h[2], h[3], h[4], h[5], h[6]}
end
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
local fence = math.max(now_us, last + 1)
redis.call('SET', KEYS[2], string.format('%.0f', fence), 'PX', ARGV[7])
local now = math.floor(now_us / 1000)
-- Every field of the holder hash is written here (heartbeats only renew heartbeat_at),
-- so the previous holder's hash needs no DEL first.
redis.call('HSET', KEYS[3], 'id', ARGV[3], 'host', ARGV[4], 'pid', ARGV[5], 'ref', ARGV[6],
  'acquired_at', now, 'heartbeat_at', now, 'fence', string.format('%.0f', fence),
  'started', ARGV[8], 'node', ARGV[9], 'token', ARGV[1])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
return {1, fence, now}
