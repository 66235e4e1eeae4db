-- Claim a job record in one step, so no crash can leave it without an expiry, and
-- list it in the job index (which expires with its newest record).
-- KEYS[1]: the job hash; KEYS[2]: the job index (a zset of ids scored by creation).
-- ARGV[1]: created_at (Unix seconds); ARGV[2]: seconds to live; ARGV[3]: the job id;
-- ARGV[4]: the most ids the index keeps ('0': the caller trims the index itself, once
-- for a batch of claims); ARGV[5..]: field, value pairs to write.
-- Returns 1 when this call created the record, 0 when it existed already.
if redis.call('HSETNX', KEYS[1], 'created_at', ARGV[1]) == 0 then
  return 0
end
if #ARGV > 4 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 5))
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[3])
if ARGV[4] ~= '0' then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[2]))
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(tonumber(ARGV[4]) + 1))
end
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
