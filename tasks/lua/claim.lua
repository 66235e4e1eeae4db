-- Claim a job record in one step, so no crash can leave it without an expiry.
-- KEYS[1]: the job hash. ARGV[1]: created_at; ARGV[2]: seconds to live;
-- ARGV[3..]: field, value pairs to write with the claim.
-- Returns 1 when this call created the record, 0 when it existed already.
if redis.call('HSETNX', KEYS[1], 'created_at', ARGV[1]) == 0 then
  return 0
end
if #ARGV > 2 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 3))
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
