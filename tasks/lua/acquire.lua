-- Take a ref lease: SET NX PX with a random token, then a fencing number.
-- KEYS[1] lease key, KEYS[2] fence counter (never expires), KEYS[3] holder hash
-- ARGV[1] token, ARGV[2] ttl ms, ARGV[3] holder id, ARGV[4] host, ARGV[5] pid, ARGV[6] ref
-- Returns {1, fence, now_ms} when taken, {0, pttl_ms, acquired_at_ms or false} when held.
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {0, redis.call('PTTL', KEYS[1]), redis.call('HGET', KEYS[3], 'acquired_at')}
end
local fence = redis.call('INCR', KEYS[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], 'id', ARGV[3], 'host', ARGV[4], 'pid', ARGV[5], 'ref', ARGV[6],
  'acquired_at', now, 'heartbeat_at', now, 'fence', fence)
redis.call('PEXPIRE', KEYS[3], ARGV[2])
return {1, fence, now}
