-- The members of the active index whose last heartbeat is newer than ARGV[1] ms, by the
-- server clock; older members are swept from the index (their hashes expire by TTL).
-- KEYS[1] active index zset; ARGV[1] staleness ms
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = now - tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. cutoff)
return redis.call('ZRANGEBYSCORE', KEYS[1], cutoff, '+inf')
