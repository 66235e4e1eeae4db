-- A child of a pull succeeded: count it off the pull's record.
-- KEYS[1] the pull's job record (a hash), ARGV[1] its field of children still pending.
-- Returns the children left, or false when the record or the field is gone (expired,
-- or written by a version that did not count): nothing is created then, so no record
-- comes back without its expiry.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return false
end
return redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
